from django.apps import AppConfig


class FollowupsConfig(AppConfig):
    name = "leads.email"
    label = "followups"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Email follow-ups"
