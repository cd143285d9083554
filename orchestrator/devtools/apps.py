from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Benchmark, demo data and screenshots: installed for development only."""

    name = "orchestrator.devtools"
    label = "devtools"
