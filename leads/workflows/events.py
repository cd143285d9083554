"""The workflow runner's audit vocabulary."""

from audit.types import register_event_type


def register() -> None:
    register_event_type("workflow_started", "Workflow processing started", category="workflow")
    register_event_type("workflow_stopped", "Workflow processing stopped", category="workflow")
