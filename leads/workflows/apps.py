from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "leads.workflows"
    label = "workflows"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from leads.workflows import events

        events.register()
