# Leads and sources now point at workflows.Workflow (the same table as before:
# the model moved app, not table), so only the state changes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("leads", "0002_lead_dashboard_indexes"),
        ("workflows", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="leadsource",
                    name="workflow",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="sources", to="workflows.workflow"),
                ),
                migrations.AlterField(
                    model_name="lead",
                    name="workflow",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="leads", to="workflows.workflow"),
                ),
            ],
            database_operations=[],
        ),
    ]
