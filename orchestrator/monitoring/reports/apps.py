from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "orchestrator.monitoring.reports"
    label = "reports"
    verbose_name = "Scheduled reports"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orchestrator.monitoring.events import register_report_types

        register_report_types()
