"""System checks for alert channels: Slack URLs still in the database, credentials unusable.

Tagged "database" (they read AlertChannel rows), so they run with
`manage.py check --database` and on the admin's channel list, not before
every management command.
"""

from __future__ import annotations

import os
from typing import Any

from django.core import checks
from django.db import DatabaseError

from core.credentials import credential_env_allowed


def channel_problems() -> list[str]:
    """One line per channel that cannot send, or still stores a Slack URL."""
    from orchestrator.monitoring.alerts.models import AlertChannel

    problems = []
    for channel in AlertChannel.objects.filter(kind__in=["slack", "webhook"], enabled=True):
        field = "url_env" if channel.kind == "slack" else "secret_env"
        name = getattr(channel, field)
        if channel.kind == "slack" and channel.target:
            # Never print the URL itself: this goes to logs and the admin.
            problems.append(
                f"Slack channel {channel.name!r} still stores its webhook URL in the database "
                f"(unused since url_env): set {name or 'SLACK_..._URL'} to that URL in the "
                "environment, then save the channel in the admin to clear the stored copy."
            )
        if not name:
            problems.append(f"{channel.kind} channel {channel.name!r} names no {field}.")
            continue
        reason = credential_env_allowed(name)
        if reason is not None:
            problems.append(f"{channel.kind} channel {channel.name!r}: {reason}")
        elif not os.environ.get(name):
            problems.append(
                f"{channel.kind} channel {channel.name!r}: environment variable {name} is not set."
            )
    return problems


@checks.register(checks.Tags.database)
def check_alert_channels(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        problems = channel_problems()
    except DatabaseError:
        # Not migrated yet: nothing to check.
        return []
    return [checks.Warning(problem, id="alerts.W001") for problem in problems]
