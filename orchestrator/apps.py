from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from orchestrator.accounts import count_failure
        from orchestrator.api import events

        user_login_failed.connect(count_failure, dispatch_uid="orchestrator_count_login_failure")
        register_cached_types()
        events.register()


def register_cached_types() -> None:
    """The dataclasses the dashboard and the reports put in the cache (core.cache
    stores JSON, never pickles, and rebuilds only the classes allowed here). A figure
    that starts caching a new type fails its test with a TypeError until it is added."""
    from audit.error_selectors import ErrorGroup
    from audit.selectors import EventVolume
    from core.cache import register_cacheable
    from orchestrator.dashboard import figures
    from orchestrator.dashboard.selectors import analytics, overview
    from orchestrator.monitoring.reports import builders
    from orchestrator.monitoring.spikes import SpikeRule

    for cls in (
        figures.CrmCallStats,
        figures.CrmSyncs,
        figures.EmailStepStats,
        figures.FunnelStage,
        figures.Summary,
        analytics.SourceStats,
        overview.ErrorSeries,
        overview.Volume,
        overview.VolumeSeries,
        SpikeRule,
        ErrorGroup,
        EventVolume,
        builders.Report,
        builders.Kpi,
        builders.Table,
        builders.Chart,
    ):
        register_cacheable(cls)
