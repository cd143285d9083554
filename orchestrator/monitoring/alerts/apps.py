from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "orchestrator.monitoring.alerts"
    label = "alerts"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from orchestrator.monitoring.alerts import checks  # noqa: F401 (registers them)
        from orchestrator.monitoring.events import register_alert_types

        register_alert_types()
