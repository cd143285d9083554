"""The report registry: kind -> (label, dotted path of its builder), as core.registry.

A builder takes the period [start, end) and returns a builders.Report. The
kinds and their labels are ReportKind's (ReportSend.kind's choices, pinned by
its migration); a new kind also needs its period in builders.report_period.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.registry import Registry
from orchestrator.monitoring.reports.models import ReportKind

if TYPE_CHECKING:
    from collections.abc import Callable

BUILDERS = "orchestrator.monitoring.reports.builders"

REPORT_KINDS: Registry[Callable[..., Any]] = Registry(
    "report kind",
    {
        ReportKind.DAILY.value: (ReportKind.DAILY.label, f"{BUILDERS}.build_daily"),
        ReportKind.WEEKLY.value: (ReportKind.WEEKLY.label, f"{BUILDERS}.build_weekly"),
        ReportKind.MONTHLY.value: (ReportKind.MONTHLY.label, f"{BUILDERS}.build_monthly"),
    },
)


def kind_choices() -> list[tuple[str, str]]:
    return REPORT_KINDS.choices()
