"""Alerts' and reports' audit vocabulary (registered by their apps)."""

from audit.types import register_event_type


def register_alert_types() -> None:
    register_event_type("alert_sent", "An alert notification was sent", category="workflow")
    register_event_type(
        "alert_snoozed",
        "An alert rule or incident was snoozed (or the snooze cleared)",
        category="workflow",
    )


def register_report_types() -> None:
    register_event_type("report_sent", "A scheduled report was sent", category="workflow")
