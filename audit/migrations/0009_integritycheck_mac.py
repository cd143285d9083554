"""IntegrityCheck rows get a MAC and, on PostgreSQL, the append-only trigger (issue 11).

Rows recorded before have an empty MAC and are shown as unverified. The
trigger reuses audit_reject_change(), which lets no UPDATE or DELETE through
on this table.
"""

from django.db import migrations, models

TABLE = "reports_integritycheck"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_prune_through_definer_function")]

    operations = [
        migrations.AddField(
            model_name="integritycheck",
            name="mac",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
