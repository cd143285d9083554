from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from orchestrator.accounts import count_failure

        user_login_failed.connect(count_failure, dispatch_uid="orchestrator_count_login_failure")
