import json

from django import forms
from django.contrib import admin

from leads.workflows.config import ConfigError, validate_workflow_config
from leads.workflows.models import Workflow, WorkflowRun


class WorkflowForm(forms.ModelForm):
    class Meta:
        model = Workflow
        fields = ["name", "enabled", "config"]

    def clean_config(self):
        config = self.cleaned_data["config"]
        try:
            validate_workflow_config(config)
        except ConfigError as exc:
            raise forms.ValidationError(exc.errors) from None
        return config


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ["name", "enabled", "updated_at"]
    help_texts = {"config": "Validated against config/workflow.schema.json on save."}


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "status", "started_at", "finished_at", "dry_run", "summary"]
    list_filter = ["status", "workflow"]
    readonly_fields = [f.name for f in WorkflowRun._meta.fields]
    show_full_result_count = False

    @admin.display(description="counts")
    def summary(self, obj: WorkflowRun) -> str:
        return json.dumps(obj.counts, sort_keys=True)

    def has_add_permission(self, request):
        return False
