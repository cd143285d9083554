# The marker that anchors have been written (audit.anchors). Append-only through
# the ORM; deliberately no PostgreSQL trigger (docs/audit-integrity.md: the
# marker only matters once the anchor log file is gone, and whoever can delete
# that file can rewrite it consistently anyway).

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_integritycheck_no_lead_fk")]

    operations = [
        migrations.CreateModel(
            name="AuditAnchorMark",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("path", models.CharField(max_length=500)),
            ],
            options={"abstract": False},
        ),
    ]
