from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The lowest layer: helpers every app may use, and the command lease table."""

    name = "core"
    default_auto_field = "django.db.models.BigAutoField"
