# CommandLock moves here from the project app ("orchestrator"): its table keeps
# its name, so this migration changes the model state only, and moves the
# content type so permissions and admin history follow the model.

from django.db import migrations, models

MODEL = "commandlock"


def move_content_type(apps, schema_editor, *, old="orchestrator", new="core"):
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
    move_content_type(apps, schema_editor, old="core", new="orchestrator")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        # The table was created there.
        ("orchestrator", "0004_run_indexes"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="CommandLock",
                    fields=[
                        ("name", models.CharField(max_length=100, primary_key=True, serialize=False)),
                        ("holder", models.CharField(max_length=200)),
                        ("acquired_at", models.DateTimeField()),
                        ("expires_at", models.DateTimeField()),
                    ],
                    options={"db_table": "orchestrator_commandlock"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_back),
    ]
