"""Error pages: errors grouped by fingerprint (like Sentry's issues), one group, and
what operators do to a group (resolve, ignore, assign)."""

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_POST

from audit import error_groups, error_selectors
from audit.models import AuditEvent
from core.periods import Period
from orchestrator.dashboard.access import (
    OPERATOR,
    actor_for,
    can_act,
    operator_required,
    viewer_required,
)
from orchestrator.dashboard.charts import Series, bar_chart
from orchestrator.dashboard.render import (
    UserInputError,
    cached_figure,
    get_period,
    path_value,
    render_page,
    requested_page,
    wanted_fragment,
)
from orchestrator.templatetags.display import stamp_text

GROUP_LIMIT = 100
PAGE_SIZE = 50
SORT_OPTIONS = [("count", "Events"), ("last_seen", "Last seen")]
STATE_OPTIONS = [
    ("unresolved", "Unresolved"),
    ("resolved", "Resolved"),
    ("ignored", "Ignored"),
    ("all", "All"),
]
DETAIL_TEMPLATE = "dashboard/error_detail.html"
DETAIL_FRAGMENTS = ("occurrences", "group-state")


def mini_bars(values: list[int], *, title: str) -> SafeString:
    """A sparkline as plain SVG bars.

    orchestrator.dashboard.charts.sparkline (pygal) takes ~10-40 ms a chart, which is seconds
    for a table of a hundred groups; this takes microseconds. Colours come from
    dashboard.css (svg.spark rect), so the CSP needs nothing inline.
    """
    width, height, n = 120, 28, max(len(values), 1)
    top = max(values, default=0) or 1
    slot = width / n
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"></rect>',
        (
            (
                f"{i * slot:.1f}",
                f"{height - max(1.0, v / top * height) if v else height:.1f}",
                f"{max(slot - 1, 0.5):.1f}",
                f"{max(1.0, v / top * height) if v else 0:.1f}",
            )
            for i, v in enumerate(values)
        ),
    )
    return format_html(
        '<svg class="spark" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="{}">{}</svg>',
        width,
        height,
        width,
        height,
        title,
        bars,
    )


def _sort(request: HttpRequest) -> error_selectors.GroupSort:
    sort = request.GET.get("sort") or "count"
    if sort not in error_selectors.GROUP_SORTS:
        raise UserInputError(
            f"sort must be one of {', '.join(error_selectors.GROUP_SORTS)}, not {sort!r}"
        )
    return sort


def _state_filter(request: HttpRequest) -> error_selectors.StateFilter:
    state = request.GET.get("state") or "unresolved"
    if state not in error_selectors.STATE_FILTERS:
        raise UserInputError(
            f"state must be one of {', '.join(error_selectors.STATE_FILTERS)}, not {state!r}"
        )
    return state  # type: ignore[return-value]


def _assigned(request: HttpRequest) -> int | None:
    """The user whose groups to show: only "me" is offered."""
    assigned = request.GET.get("assigned") or ""
    if assigned not in ("", "me"):
        raise UserInputError(f"assigned must be 'me' or left out, not {assigned!r}")
    return request.user.pk if assigned else None


def _events_url(period: Period, **params: str) -> str:
    """The event browser over this period with extra filters."""
    return f"{reverse('event-list')}?{urlencode({**period.query(), **params})}"


@viewer_required
@require_GET
def error_list(request: HttpRequest) -> HttpResponse:
    period = get_period(request)
    sort = _sort(request)
    state = _state_filter(request)
    assignee_id = _assigned(request)
    buckets = period.buckets()
    # The groups of a long period aggregate tens of thousands of rows: a page and its
    # reloads within the same minute share one computation (at most a minute stale).
    # The states are part of the key: a group resolved a second ago has left the
    # unresolved list, and one that regressed is back in it.
    states = error_selectors.group_states()
    key = (
        state,
        assignee_id,
        error_selectors.states_digest(states),
    )
    groups = cached_figure(
        "errors:groups",
        sort,
        period.unit,
        *key,
        compute=lambda: error_selectors.error_groups(
            since=period.start,
            until=period.end,
            buckets=buckets,
            sort=sort,
            limit=GROUP_LIMIT,
            state=state,
            assignee_id=assignee_id,
            states=states,
        ),
        window=(period.start, period.end),
    )
    total = cached_figure(
        "errors:group-count",
        *key,
        compute=lambda: error_selectors.error_group_count(
            since=period.start,
            until=period.end,
            state=state,
            assignee_id=assignee_id,
            states=states,
        ),
        window=(period.start, period.end),
    )
    rows = [
        {
            "group": group,
            "new": group.is_new(period.start),
            "spark": mini_bars(group.counts, title=f"{group.count} occurrences, per {period.unit}"),
        }
        for group in groups
    ]
    return render_page(
        request,
        "dashboard/error_list.html",
        {
            "rows": rows,
            "total": total,
            "sort": sort,
            "sort_options": SORT_OPTIONS,
            "state": state,
            "state_options": STATE_OPTIONS,
            "assigned_to_me": assignee_id is not None,
            "limit": GROUP_LIMIT,
            "unit": period.unit,
        },
        nav="errors",
        period=period,
        fragment="error-groups",
    )


def _url_pattern(name: str, kwarg: str, sample: str) -> str:
    # One reverse() for a whole table: the row's value goes where the sample was.
    return reverse(name, kwargs={kwarg: sample}).replace(f"/{sample}/", "/{}/")


def _stamp(moment: datetime) -> tuple[str, str]:
    """(ISO 8601, the dashboard's one time format), as the |stamp filter shows it."""
    return timezone.localtime(moment).isoformat(), stamp_text(moment)


def _occurrence_rows(events: list[AuditEvent]) -> list[dict[str, Any]]:
    """What each occurrence row shows, prepared once: per-row url tags and date filters
    cost more than the query for a page of 50."""
    event_url = _url_pattern("event-detail", "pk", "1")
    lead_url = _url_pattern("lead-detail", "public_id", "LEAD-000001")
    rows = []
    for event in events:
        iso, text = _stamp(event.timestamp)
        message = event.error_message
        rows.append(
            {
                "pk": event.pk,
                "iso": iso,
                "when": text,
                "lead_public_id": event.lead_public_id,
                "lead_url": lead_url.format(quote(event.lead_public_id))
                if event.lead_public_id
                else "",
                "workflow": event.workflow,
                "message": message if len(message) <= 200 else message[:199] + "…",
                "url": event_url.format(event.pk),
            }
        )
    return rows


def _lead_rows(leads: list[dict]) -> list[dict[str, Any]]:
    lead_url = _url_pattern("lead-detail", "public_id", "LEAD-000001")
    for row in leads:
        iso, text = _stamp(row["last_seen"])
        row.update(iso=iso, when=text, url=lead_url.format(quote(row["lead_public_id"])))
    return leads


def _occurrence_chart(period: Period, fingerprint: str) -> SafeString:
    """Occurrences per bucket of the period; a bar opens that bucket's occurrences in
    the event browser."""
    buckets = period.buckets()
    counts = error_selectors.occurrence_counts(
        fingerprint=fingerprint, buckets=buckets, until=period.end
    )
    edges = [*buckets[1:], period.end]
    clipped = [(max(lo, period.start), hi) for lo, hi in zip(buckets, edges, strict=True)]
    links = [
        _events_url(period, **period.narrowed(lo, hi), type="error", fingerprint=fingerprint)
        for lo, hi in clipped
    ]
    return bar_chart(
        buckets=clipped,
        unit=period.unit,
        series=[Series("Occurrences", counts, links=links)],
        title=f"Occurrences per {period.unit}",
        noun=("occurrence", "occurrences"),
        stacked=False,
        height=180,
    )


def assignable_users() -> QuerySet[Any]:
    """Who a group may be assigned to: the people who may act on it."""
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name=OPERATOR))
        .distinct()
        .order_by("username")
    )


class IgnoreForm(forms.Form):
    FOREVER, COUNT, UNTIL = "forever", "count", "until"
    ignore = forms.ChoiceField(
        choices=[(FOREVER, "forever"), (COUNT, "for N more occurrences"), (UNTIL, "until")],
        initial=FOREVER,
    )
    count = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    until = forms.DateTimeField(
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        how = data.get("ignore")
        if how == self.COUNT and not data.get("count"):
            raise forms.ValidationError("Say after how many more occurrences it comes back.")
        if how == self.UNTIL and not data.get("until"):
            raise forms.ValidationError("Say until when (a date, or a date and time).")
        return data


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(
        queryset=assignable_users(), error_messages={"invalid_choice": "No such operator."}
    )


def _form_error(form: forms.Form) -> str:
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


def _ignore(request: HttpRequest, fingerprint: str, actor: str) -> str:
    form = IgnoreForm(request.POST)
    if not form.is_valid():
        raise error_groups.GroupStateError(_form_error(form))
    how = form.cleaned_data["ignore"]
    count = form.cleaned_data["count"] if how == IgnoreForm.COUNT else None
    until = form.cleaned_data["until"] if how == IgnoreForm.UNTIL else None
    error_groups.error_group_ignore(fingerprint=fingerprint, actor=actor, until=until, count=count)
    if count:
        return f"Ignored until {count} more occurrences."
    if until:
        return f"Ignored until {timezone.localtime(until):%Y-%m-%d %H:%M %Z}."
    return "Ignored."


def _assign(request: HttpRequest, fingerprint: str, actor: str) -> str:
    form = AssignForm(request.POST)
    if not form.is_valid():
        raise error_groups.GroupStateError(_form_error(form))
    user = form.cleaned_data["assignee"]
    error_groups.error_group_assign(fingerprint=fingerprint, assignee=user, actor=actor)
    return f"Assigned to {user.get_username()}."


def _simple(change: Callable[..., Any], done: str) -> Callable[[HttpRequest, str, str], str]:
    def act(request: HttpRequest, fingerprint: str, actor: str) -> str:
        change(fingerprint=fingerprint, actor=actor)
        return done

    return act


ACTIONS: dict[str, Callable[[HttpRequest, str, str], str]] = {
    "resolve": _simple(error_groups.error_group_resolve, "Resolved."),
    "unresolve": _simple(error_groups.error_group_unresolve, "Marked unresolved."),
    "ignore": _ignore,
    "unignore": _simple(error_groups.error_group_unignore, "No longer ignored."),
    "assign": _assign,
    "unassign": _simple(error_groups.error_group_unassign, "Unassigned."),
}


@operator_required
@require_POST
def error_group_state(request: HttpRequest, fingerprint: str) -> HttpResponse:
    """Resolve, ignore, assign (or undo): the group's state panel again for htmx, a
    redirect back to the group page otherwise, with a message. A change that does not
    apply, or a bad form, is a 400 that says why."""
    fingerprint = path_value(fingerprint, what="error group")
    if not error_selectors.group_exists(fingerprint):
        raise Http404("No error with this fingerprint was ever recorded.")
    action = ACTIONS.get(request.POST.get("action", ""))
    status = 200
    if action is None:
        messages.error(request, f"action must be one of {', '.join(ACTIONS)}")
        status = 400
    else:
        try:
            messages.success(request, action(request, fingerprint, actor_for(request)))
        except error_groups.GroupStateError as exc:
            messages.error(request, str(exc))
            status = 400
    if status == 200 and not wanted_fragment(request, default="group-state"):
        return redirect(f"{reverse('error-detail', args=[fingerprint])}?{_period_query(request)}")
    return _render_detail(request, fingerprint, fragment="group-state", status=status)


def _period_query(request: HttpRequest) -> str:
    return urlencode(get_period(request).query())


@viewer_required
@require_GET
def error_detail(request: HttpRequest, fingerprint: str) -> HttpResponse:
    fingerprint = path_value(fingerprint, what="error group")
    return _render_detail(request, fingerprint, fragment="occurrences")


def _render_detail(
    request: HttpRequest, fingerprint: str, *, fragment: str, status: int = 200
) -> HttpResponse:
    period = get_period(request)
    group = error_selectors.error_group(
        fingerprint=fingerprint, since=period.start, until=period.end
    )
    if group is None:
        raise Http404("No error with this fingerprint was ever recorded.")
    page = requested_page(
        request,
        lambda cursor: error_selectors.group_occurrences(
            fingerprint=fingerprint,
            since=period.start,
            until=period.end,
            cursor=cursor,
            size=PAGE_SIZE,
        ),
    )
    leads = error_selectors.group_leads(
        fingerprint=fingerprint, since=period.start, until=period.end
    )
    acting = can_act(request.user)
    context = {
        "group": group,
        "state": group.state,
        "occurrences": _occurrence_rows(page.items),
        "page": page,
        "leads": _lead_rows(leads),
        "events_url": _events_url(period, type="error", fingerprint=fingerprint),
        "chart": _occurrence_chart(period, fingerprint),
        "can_act": acting,
        "assignable": list(assignable_users()) if acting else [],
        "state_url": reverse("error-group-state", args=[fingerprint]),
    }
    return render_page(
        request,
        DETAIL_TEMPLATE,
        context,
        nav="errors",
        period=period,
        fragment=fragment,
        fragments=DETAIL_FRAGMENTS,
        status=status,
    )
