# The store holds no foreign key into a domain app: AuditEvent.lead goes (it had
# no constraint and no index; lead_public_id, indexed, is how events find their
# lead, and the MAC never covered the column). IntegrityCheck, the record of
# verify_audit runs, moves here from the reports app under its old table name.

import django.utils.timezone
from django.db import migrations, models

MODEL = "integritycheck"


def move_content_type(apps, schema_editor, *, old="reports", new="audit"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    moving = ContentType.objects.filter(app_label=old, model=MODEL).first()
    if moving is None:
        return
    # A half-migrated state (one app migrated, the other not) lets post_migrate
    # create an empty twin under the other label; the original, which
    # permissions and admin history point at, wins.
    ContentType.objects.filter(app_label=new, model=MODEL).delete()
    moving.app_label = new
    moving.save(update_fields=["app_label"])


def move_back(apps, schema_editor):
    move_content_type(apps, schema_editor, old="audit", new="reports")


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0005_fingerprint_db_default"),
        # The table was created there.
        ("reports", "0002_integrity_check"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RemoveField(model_name="auditevent", name="lead"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IntegrityCheck",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("checked_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("ok", models.BooleanField()),
                        ("events_checked", models.PositiveBigIntegerField()),
                        ("seals_checked", models.PositiveIntegerField()),
                        ("unsealed", models.PositiveBigIntegerField(default=0)),
                        ("first_problem", models.TextField(blank=True)),
                    ],
                    options={"db_table": "reports_integritycheck", "ordering": ["-checked_at", "-id"]},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_back),
    ]
