# Workflow and WorkflowRun move here from the project app ("orchestrator"):
# their tables keep their names, so this migration changes the model state
# only, and moves the content types so permissions and admin history follow.

import django.db.models.deletion
from django.db import migrations, models

MODELS = ("workflow", "workflowrun")


def move_content_types(apps, schema_editor, *, old="orchestrator", new="workflows"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        moving = ContentType.objects.filter(app_label=old, model=model).first()
        if moving is None:
            continue
        # A half-migrated state (one app migrated, the other not) lets
        # post_migrate create an empty twin under the other label; the
        # original, which permissions and admin history point at, wins.
        ContentType.objects.filter(app_label=new, model=model).delete()
        moving.app_label = new
        moving.save(update_fields=["app_label"])


def move_back(apps, schema_editor):
    move_content_types(apps, schema_editor, old="workflows", new="orchestrator")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        # The tables were created there.
        ("orchestrator", "0004_run_indexes"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Workflow",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.SlugField(max_length=100, unique=True)),
                        ("config", models.JSONField(default=dict)),
                        ("enabled", models.BooleanField(default=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={"db_table": "orchestrator_workflow"},
                ),
                migrations.CreateModel(
                    name="WorkflowRun",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("started_at", models.DateTimeField()),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                        ("status", models.CharField(choices=[("running", "Running"), ("succeeded", "Succeeded"), ("failed", "Failed"), ("interrupted", "Interrupted")], default="running", max_length=20)),
                        ("dry_run", models.BooleanField(default=False)),
                        ("counts", models.JSONField(default=dict)),
                        ("error", models.TextField(blank=True)),
                        ("correlation_id", models.CharField(max_length=64)),
                        ("workflow", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="runs", to="workflows.workflow")),
                    ],
                    options={
                        "db_table": "orchestrator_workflowrun",
                        "indexes": [
                            models.Index(fields=["workflow", "-started_at"], name="run_workflow_started"),
                            models.Index(fields=["-started_at", "-id"], name="run_started"),
                            models.Index(fields=["status", "-started_at", "-id"], name="run_status_started"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_back),
    ]
