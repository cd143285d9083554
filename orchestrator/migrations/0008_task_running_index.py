from django.db import migrations

# Every live worker looks for tasks left RUNNING by dead ones on each heartbeat
# (orchestrator.monitoring.heartbeat.reclaim_abandoned); finished tasks pile up
# in the same table, so the few RUNNING rows get an index of their own.
INDEX = "orchestrator_task_running"
TABLE = "django_tasks_database_dbtaskresult"


class Migration(migrations.Migration):
    dependencies = [
        ("orchestrator", "0007_export_job_attempts"),
        ("django_tasks_database", "0021_conditional_partial_index_ordering"),
    ]

    operations = [
        migrations.RunSQL(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON {TABLE} (started_at) WHERE status = 'RUNNING'",
            f"DROP INDEX IF EXISTS {INDEX}",
        )
    ]
