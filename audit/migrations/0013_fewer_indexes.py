# Two of the nine indexes on the events table cost 180 bytes an event and a B-tree
# update per write for queries the other indexes and the rollups answer (see the
# comments in audit/models.py). Dropping an index is quick; building the partial
# actor index reads the table once (on PostgreSQL holding writes for that long).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0012_fingerprint_2026_12_07"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="auditevent",
            name="audit_workflow_ts",
        ),
        migrations.RemoveIndex(
            model_name="auditevent",
            name="audit_actor_ts",
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("actor", "system"), _negated=True),
                fields=["actor", "-timestamp", "-id"],
                name="audit_actor_ts_people",
            ),
        ),
    ]
