# IntegrityCheck moved to the audit app (its table stays): state only.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("reports", "0002_integrity_check"),
        ("audit", "0006_integritycheck_no_lead_fk"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="IntegrityCheck")],
            database_operations=[],
        ),
    ]
