from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "orchestrator.monitoring.reports"
    label = "reports"
    verbose_name = "Scheduled reports"
    default_auto_field = "django.db.models.BigAutoField"
