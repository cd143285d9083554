# Tasks queued before the move name their function by its old dotted path,
# which no longer imports; point them at the new one so a worker started
# after `migrate` runs them (and finished ones still show their task).

from django.db import migrations

MOVED = {
    "orchestrator.steps.run_step": "leads.workflows.steps.run_step",
}


def rename(apps, schema_editor, *, moves=MOVED):
    DBTaskResult = apps.get_model("django_tasks_database", "DBTaskResult")
    for old, new in moves.items():
        DBTaskResult.objects.filter(task_path=old).update(task_path=new)


def rename_back(apps, schema_editor):
    rename(apps, schema_editor, moves={new: old for old, new in MOVED.items()})


class Migration(migrations.Migration):

    dependencies = [
        ("workflows", "0001_initial"),
        ("django_tasks_database", "0021_conditional_partial_index_ordering"),
    ]

    operations = [migrations.RunPython(rename, rename_back)]
