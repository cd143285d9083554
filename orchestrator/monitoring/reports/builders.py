"""What each report says, as plain data (tables, KPIs, charts) that the email,
the dashboard page and the CSV attachments all render from.

Periods are whole UTC days: daily = one day, weekly = an ISO week (Monday to
Sunday), monthly = a calendar month. By default a report covers the last
complete period, so a 06:00 cron job sends yesterday's numbers.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Sum

from audit.integrity import verify as verify_trail
from audit.models import AuditEvent, AuditPrune
from audit.selectors import statistics
from audit.verification import (
    check_status,
    last_verification,
    latest_check,
    record_verification,
)
from leads.models import Lead, LeadSource
from orchestrator.dashboard import figures
from orchestrator.monitoring.reports.kinds import REPORT_KINDS
from orchestrator.monitoring.reports.models import ReportKind
from orchestrator.monitoring.spikes import SpikeRule, spike_indexes


@dataclass
class Table:
    key: str  # names the CSV attachment
    title: str
    headers: list[str]
    rows: list[list[Any]]
    empty: str = "Nothing in this period."


@dataclass
class Chart:
    key: str
    title: str
    labels: list[str]
    series: dict[str, list[float]]


@dataclass
class Kpi:
    label: str
    value: int | float
    previous: int | float | None = None
    percent: bool = False

    @property
    def change(self) -> float | None:
        """Relative change against the previous period, or None when there is nothing to compare."""
        if self.previous in (None, 0):
            return None
        return (self.value - self.previous) / self.previous


@dataclass
class Report:
    kind: str
    start: date
    end: date  # exclusive
    kpis: list[Kpi] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)

    @property
    def title(self) -> str:
        label = ReportKind(self.kind).label
        if self.kind == ReportKind.DAILY:
            return f"{label}: {self.start:%A %d %B %Y}"
        if self.kind == ReportKind.WEEKLY:
            return f"{label}: week {self.start:%G-W%V} ({self.start} to {self.end - timedelta(1)})"
        return f"{label}: {self.start:%B %Y}"

    @property
    def since(self) -> datetime:
        return _dt(self.start)

    @property
    def until(self) -> datetime:
        return _dt(self.end)


def _dt(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def report_period(kind: str, on: date) -> tuple[date, date]:
    """The period of `kind` that contains the day `on`: [start, end)."""
    if kind == ReportKind.DAILY:
        return on, on + timedelta(days=1)
    if kind == ReportKind.WEEKLY:
        start = on - timedelta(days=on.weekday())
        return start, start + timedelta(days=7)
    if kind == ReportKind.MONTHLY:
        start = on.replace(day=1)
        return start, (start + timedelta(days=32)).replace(day=1)
    raise ValueError(f"unknown report kind {kind!r}; choose daily, weekly or monthly")


def last_complete_day(kind: str, today: date) -> date:
    """A day inside the last period of `kind` that has fully ended before `today`."""
    if kind == ReportKind.DAILY:
        return today - timedelta(days=1)
    if kind == ReportKind.WEEKLY:
        return today - timedelta(days=today.weekday() + 1)
    return today.replace(day=1) - timedelta(days=1)


# --- shared figures ----------------------------------------------------------------------
# Every number is a figure of orchestrator.dashboard.figures, the one definition the
# dashboard and the alerts share; the report only rounds rates to percent.


def _pipeline_counts(since: datetime, until: datetime) -> dict[str, int]:
    figure = figures.summary(start=since, end=until)
    return {
        "ingested": figure.leads,
        "qualified": figure.qualified,
        "routed": figure.routed,
        "crm_ok": figure.crm.ok,
        "crm_failed": figure.crm.failed,
        "emails_sent": figure.emails_sent,
        "opens": figure.opens,
        "clicks": figure.clicks,
        "replies": figure.replies,
        "bounces": figure.bounces,
        "unsubscribes": figure.unsubscribes,
        "errors": figure.errors,
    }


def _rate(part: int, whole: int) -> float:
    rate = figures.ratio(part, whole)
    return round(100 * rate, 1) if rate is not None else 0.0


def _kpis(now: dict[str, int], before: dict[str, int] | None) -> list[Kpi]:
    def prev(key: str) -> int | None:
        return before[key] if before else None

    def prev_rate(a: str, b: str) -> float | None:
        return _rate(before[a], before[b]) if before else None

    def crm_rate(f: dict[str, int]) -> float:
        return _rate(f["crm_ok"], f["crm_ok"] + f["crm_failed"])

    return [
        Kpi("Leads", now["ingested"], prev("ingested")),
        Kpi(
            "Qualification rate %",
            _rate(now["qualified"], now["ingested"]),
            prev_rate("qualified", "ingested"),
            percent=True,
        ),
        Kpi(
            "CRM sync success %",
            crm_rate(now),
            crm_rate(before) if before else None,
            percent=True,
        ),
        Kpi("Emails sent", now["emails_sent"], prev("emails_sent")),
        Kpi("Replies", now["replies"], prev("replies")),
        Kpi("Errors", now["errors"], prev("errors")),
    ]


def _leads_by_source(since: datetime, until: datetime) -> Table:
    counts = figures.funnel_counts(start=since, end=until, group_by="source")
    names = dict(LeadSource.objects.filter(pk__in=list(counts)).values_list("pk", "name"))
    rows = sorted(counts.items(), key=lambda item: (-item[1]["ingested"], names[item[0]]))
    return Table(
        "leads_by_source",
        "Leads by source",
        ["Source", "Leads", "Qualified", "Qualified %", "Disqualified", "Replied %", "Avg score"],
        [
            [
                names[pk],
                r["ingested"],
                r["qualified"],
                _rate(r["qualified"], r["ingested"]),
                r.disqualified,
                _rate(r["replied"], r["ingested"]),
                round(r.avg_score, 1) if r.avg_score is not None else "",
            ]
            for pk, r in rows
        ],
    )


def _error_groups(since: datetime, until: datetime, limit: int = 20) -> Table:
    rows = (
        AuditEvent.objects.filter(timestamp__gte=since, timestamp__lt=until)
        .exclude(fingerprint="")
        .values("fingerprint")
        .annotate(
            count=Count("id"), last=Max("timestamp"), leads=Count("lead_public_id", distinct=True)
        )
        .order_by("-count")[:limit]
    )
    latest = {
        e.fingerprint: e
        for e in AuditEvent.objects.filter(
            pk__in=[
                AuditEvent.objects.filter(fingerprint=r["fingerprint"], timestamp__lt=until)
                .order_by("-timestamp", "-id")
                .values_list("pk", flat=True)[:1]
                .get()
                for r in rows
            ]
        )
    }
    return Table(
        "errors",
        "Errors by group",
        ["Group", "Error", "Message", "Count", "Leads", "Last seen (UTC)"],
        [
            [
                r["fingerprint"],
                latest[r["fingerprint"]].error_type,
                latest[r["fingerprint"]].error_message[:200],
                r["count"],
                r["leads"],
                f"{r['last']:%Y-%m-%d %H:%M}",
            ]
            for r in rows
        ],
    )


def _errors_hourly(since: datetime, until: datetime) -> list[int]:
    by_hour = figures.errors_by_hour(start=since, end=until)
    hours = int((until - since).total_seconds() // 3600)
    return [by_hour.get(since + timedelta(hours=h), 0) for h in range(hours)]


def _hourly(since: datetime, until: datetime, qs: Any, field_name: str) -> list[int]:
    hours = int((until - since).total_seconds() // 3600)
    counts = [0] * hours
    for moment in (
        qs.filter(**{f"{field_name}__gte": since, f"{field_name}__lt": until})
        .values_list(field_name, flat=True)
        .iterator()
    ):
        counts[int((moment - since).total_seconds() // 3600)] += 1
    return counts


def _daily(since: datetime, until: datetime) -> tuple[list[str], list[float]]:
    days = (until - since).days
    by_day = statistics(since=since, until=until).by_day
    labels = [(since + timedelta(days=i)).date() for i in range(days)]
    return [f"{d:%d %b}" for d in labels], [by_day.get(d.isoformat(), 0) for d in labels]


# --- the three reports -----------------------------------------------------------------------


def build_daily(start: date, end: date) -> Report:
    since, until = _dt(start), _dt(end)
    report = Report(ReportKind.DAILY, start, end)
    now = _pipeline_counts(since, until)
    report.kpis = _kpis(now, _pipeline_counts(since - timedelta(days=1), since))
    report.kpis += [
        Kpi("CRM failures", now["crm_failed"]),
        Kpi("Bounces", now["bounces"]),
    ]
    report.tables.append(_leads_by_source(since, until))
    status = figures.leads_by_status(start=since, end=until)
    report.tables.append(
        Table(
            "qualification",
            "Qualification decisions",
            ["Status", "Leads"],
            [[Lead.Status(s).label, n] for s, n in sorted(status.items())],
        )
    )
    report.tables.append(
        Table(
            "crm_sync",
            "CRM sync (HTTP calls per connection)",
            ["Connection", "Calls", "OK", "Retried", "Failed", "Avg latency (ms)"],
            [
                [c.connection, c.calls, c.ok, c.retried, c.failed, round(c.avg_ms or 0)]
                for c in figures.crm_calls(start=since, end=until)
            ],
        )
    )
    report.tables.append(
        Table(
            "emails",
            "Follow-up emails",
            ["Sent", "Opened", "Clicked", "Replies", "Bounces", "Unsubscribes"],
            [
                [
                    now["emails_sent"],
                    now["opens"],
                    now["clicks"],
                    now["replies"],
                    now["bounces"],
                    now["unsubscribes"],
                ]
            ],
        )
    )
    report.tables.append(_error_groups(since, until))
    # Spikes: each hour of the day against the hours before it (the previous day
    # gives the first hours their baseline).
    rule = SpikeRule(
        k=settings.DASHBOARD_SPIKE_K,
        min_count=settings.DASHBOARD_SPIKE_MIN_COUNT,
        window=24,
    )
    hours = _errors_hourly(since - timedelta(days=1), until)
    spikes = sorted(i - 24 for i in spike_indexes(hours, rule) if i >= 24)
    report.tables.append(
        Table(
            "error_spikes",
            "Error spikes (hours above the preceding 24 hours' mean + k standard deviations)",
            ["Hour (UTC)", "Errors"],
            [[f"{since + timedelta(hours=h):%H:00}", hours[h + 24]] for h in spikes],
            empty="No spikes.",
        )
    )
    leads_hourly = _hourly(since, until, Lead.objects.all(), "created_at")
    labels = [f"{h:02d}" for h in range(len(leads_hourly))]
    report.charts.append(
        Chart("leads_per_hour", "Leads per hour (UTC)", labels, {"Leads": leads_hourly})
    )
    report.charts.append(
        Chart("errors_per_hour", "Errors per hour (UTC)", labels, {"Errors": hours[24:]})
    )
    return report


def build_weekly(start: date, end: date) -> Report:
    since, until = _dt(start), _dt(end)
    report = Report(ReportKind.WEEKLY, start, end)
    now = _pipeline_counts(since, until)
    before = _pipeline_counts(since - timedelta(days=7), since)
    report.kpis = _kpis(now, before)
    report.tables.append(
        Table(
            "trends",
            "This week against the previous week",
            ["Figure", "This week", "Previous week", "Change %"],
            [
                [k, now[k], before[k], _change(now[k], before[k])]
                for k in (
                    "ingested",
                    "qualified",
                    "routed",
                    "crm_ok",
                    "crm_failed",
                    "emails_sent",
                    "replies",
                    "bounces",
                    "errors",
                )
            ],
        )
    )
    report.tables.append(_leads_by_source(since, until))
    stages = figures.funnel(start=since, end=until)
    report.tables.append(
        Table(
            "funnel",
            "Funnel (leads created this week; each stage within the one before)",
            ["Stage", "Leads", "% of previous stage", "% of ingested"],
            [
                [
                    stage.key.replace("_", " ").capitalize(),
                    stage.count,
                    _rate(stage.count, stages[i - 1].count) if i else 100.0,
                    _rate(stage.count, stages[0].count),
                ]
                for i, stage in enumerate(stages)
            ],
        )
    )
    owners = figures.funnel_counts(start=since, end=until, group_by="owner")
    owners.pop(None, None)  # unrouted leads have no owner row
    User = get_user_model()
    usernames = dict(
        User.objects.filter(pk__in=list(owners)).values_list("pk", User.USERNAME_FIELD)
    )
    report.tables.append(
        Table(
            "owners",
            "Per owner",
            ["Owner", "Leads", "Qualified", "Replied", "Avg score"],
            [
                [
                    usernames[pk],
                    r["ingested"],
                    r["qualified"],
                    r["replied"],
                    round(r.avg_score, 1) if r.avg_score is not None else "",
                ]
                for pk, r in sorted(
                    owners.items(), key=lambda item: (-item[1]["ingested"], usernames[item[0]])
                )
            ],
        )
    )
    _, this_week = _daily(since, until)
    _, last_week = _daily(since - timedelta(days=7), since)
    report.charts.append(
        Chart(
            "events_per_day",
            "Audit events per day, against the previous week",
            [f"{(start + timedelta(days=i)):%a}" for i in range(7)],
            {"This week": this_week, "Previous week": last_week},
        )
    )
    return report


def _change(now: int, before: int) -> str:
    return f"{100 * (now - before) / before:+.1f}" if before else ""


INTEGRITY_HEADERS = [
    "Result",
    "Events checked",
    "Seals checked",
    "Not yet sealed",
    "First problem",
    "Checked at (UTC)",
]


CHECK_NOT_VERIFIED = {
    "unmacd": "UNVERIFIED (recorded before MACs)",
    "tampered": "TAMPERED (its MAC does not verify)",
}


def _check_row(check: Any, result: str) -> list:
    return [
        result,
        check.events_checked,
        check.seals_checked,
        check.unsealed,
        check.first_problem,
        f"{check.checked_at.astimezone(UTC):%Y-%m-%d %H:%M}",
    ]


def _integrity_table(verify: Callable[[], Any], *, recorded: bool) -> Table:
    """The audit trail's integrity: verified now (and recorded as the latest check), or,
    with `recorded`, the latest recorded check (verify_audit or a sent monthly report).

    Only a check whose MAC verifies shows as a result; a newer row without a valid MAC
    (forged, altered, or recorded before MACs) is listed above it as such."""
    rows = []
    if recorded:
        check = last_verification()
        newest = latest_check()
        if newest is not None and (status := check_status(newest)) != "verified":
            rows.append(_check_row(newest, CHECK_NOT_VERIFIED[status]))
        title = "Audit trail integrity (the last full verification, by verify_audit)"
    else:
        check = record_verification(verify())
        title = "Audit trail integrity (verify_audit, run when this report was made)"
    if check is not None:
        rows.append(_check_row(check, "OK" if check.ok else "FAILED"))
    if not rows:
        return Table(
            "integrity",
            title,
            INTEGRITY_HEADERS,
            [],
            empty="Not verified yet: run manage.py verify_audit (e.g. nightly from cron).",
        )
    return Table("integrity", title, INTEGRITY_HEADERS, rows)


def build_monthly(
    start: date,
    end: date,
    *,
    verify: Callable[[], Any] | None = None,
    recorded_integrity: bool = False,
) -> Report:
    """`recorded_integrity`: show the last recorded verification instead of verifying
    the whole trail now (the dashboard; the sent report verifies)."""
    since, until = _dt(start), _dt(end)
    report = Report(ReportKind.MONTHLY, start, end)
    stats = statistics(since=since, until=until)
    report.kpis = [
        Kpi("Audit events", stats.total_events),
        Kpi(
            "Error rate %",
            round(100 * stats.error_rate, 2) if stats.total_events else 0.0,
            percent=True,
        ),
    ]
    report.tables.append(
        Table(
            "events_by_type",
            "Events by type",
            ["Event type", "Events"],
            [[t, n] for t, n in sorted(stats.by_type.items(), key=lambda x: (-x[1], x[0]))],
        )
    )
    report.tables.append(_integrity_table(verify or verify_trail, recorded=recorded_integrity))
    prunes = (
        AuditPrune.objects.filter(created_at__gte=since, created_at__lt=until)
        .values("run", "actor", "before", "archive_path", "archive_sha256")
        .annotate(deleted=Sum("deleted_count"), at=Max("created_at"))
        .order_by("at")
    )
    report.tables.append(
        Table(
            "retention",
            "Retention and prune actions",
            [
                "When (UTC)",
                "Actor",
                "Deleted events before",
                "Events deleted",
                "Archive",
                "SHA-256",
            ],
            [
                [
                    f"{p['at']:%Y-%m-%d %H:%M}",
                    p["actor"],
                    f"{p['before']:%Y-%m-%d}",
                    p["deleted"],
                    p["archive_path"],
                    p["archive_sha256"],
                ]
                for p in prunes
            ],
        )
    )
    access = (
        AuditEvent.objects.filter(
            timestamp__gte=since,
            timestamp__lt=until,
            event_type__in=["audit_viewed", "audit_exported", "audit_imported", "audit_pruned"],
        )
        .values("actor", "event_type")
        .annotate(n=Count("id"), last=Max("timestamp"))
        .order_by("actor", "event_type")
    )
    report.tables.append(
        Table(
            "audit_access",
            "Who viewed or exported audit data",
            ["Actor", "Action", "Times", "Last (UTC)"],
            [[a["actor"], a["event_type"], a["n"], f"{a['last']:%Y-%m-%d %H:%M}"] for a in access],
        )
    )
    changes = (
        LogEntry.objects.filter(action_time__gte=since, action_time__lt=until)
        .select_related("user", "content_type")
        .order_by("action_time")[:1000]
    )
    report.tables.append(
        Table(
            "admin_changes",
            "Admin changes",
            ["When (UTC)", "User", "Action", "Object type", "Object", "Change"],
            [
                [
                    f"{c.action_time:%Y-%m-%d %H:%M}",
                    c.user.get_username(),
                    {1: "added", 2: "changed", 3: "deleted"}.get(c.action_flag, "?"),
                    c.content_type.name if c.content_type else "",
                    c.object_repr,
                    c.get_change_message(),
                ]
                for c in changes
            ],
        )
    )
    failed = AuditEvent.objects.filter(
        timestamp__gte=since, timestamp__lt=until, event_type="login_failed"
    ).order_by("timestamp")[:1000]
    report.tables.append(
        Table(
            "failed_logins",
            "Failed logins",
            ["When (UTC)", "Username", "Client IP"],
            [
                [
                    f"{e.timestamp:%Y-%m-%d %H:%M:%S}",
                    e.details.get("username", ""),
                    e.details.get("ip", ""),
                ]
                for e in failed
            ],
        )
    )
    labels, per_day = _daily(since, until)
    report.charts.append(
        Chart("events_per_day", "Audit events per day", labels, {"Events": per_day})
    )
    return report


def build_report(kind: str, on: date, *, recorded_integrity: bool = False) -> Report:
    """The report of `kind` for the period containing `on`; `recorded_integrity` as for
    build_monthly (other kinds have no integrity section)."""
    start, end = report_period(kind, on)
    if kind == ReportKind.MONTHLY:
        return build_monthly(start, end, recorded_integrity=recorded_integrity)
    return REPORT_KINDS.load(kind)(start, end)
