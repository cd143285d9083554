# CommandLock moved to core, Workflow and WorkflowRun to leads.workflows; their
# tables stay where they are and now belong to those apps' state.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("orchestrator", "0004_run_indexes"),
        ("core", "0001_initial"),
        ("workflows", "0001_initial"),
        # Nothing in the state may point at orchestrator.Workflow any more.
        ("leads", "0003_workflow_moved"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="WorkflowRun"),
                migrations.DeleteModel(name="Workflow"),
                migrations.DeleteModel(name="CommandLock"),
            ],
            database_operations=[],
        ),
    ]
