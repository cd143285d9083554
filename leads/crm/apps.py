from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "leads.crm"
    label = "crm"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "CRM sync"

    def ready(self) -> None:
        from leads.crm import events
        from leads.workflows.steps import register_step

        register_step("crm_sync", "leads.crm.steps.CrmSyncStep", "Sync to a CRM")
        events.register()
