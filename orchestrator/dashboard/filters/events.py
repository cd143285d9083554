"""The event browser's filters: one django-filter FilterSet validates the query string
and narrows the events; the view answers 400 with its messages."""

from datetime import datetime, timedelta

import django_filters
from django import forms
from django.conf import settings
from django.db.models import QuerySet

from audit.models import AuditEvent
from audit.selectors import INDEXED_SEARCH_MIN, details_contains, details_search_is_indexed
from audit.types import known_event_types
from core.paging import MAX_CURSOR_LENGTH
from core.periods import Period
from orchestrator.dashboard.render import validate_searchable

# Filters the rollup tables can answer (they are keyed by hour, type and workflow);
# any other filter needs the events themselves.
ROLLUP_FILTERS = frozenset({"type", "workflow"})
# Filters that match few events, so text search may look further back than the bound.
NARROWING_FILTERS = ("lead", "correlation", "fingerprint")


def lead_id_spellings(value: str) -> set[str]:
    """The spellings of a lead id to look for, so that case does not matter for
    the ids people type: "lead-000123" finds LEAD-000123. Case-folded equality
    would read every event of the range (no index serves it); the id as typed,
    upper and lower case are an IN over the (lead, time) index."""
    value = value.strip()
    return {value, value.upper(), value.lower()}


class EventFilterForm(forms.Form):
    """Paging and live-tail parameters, validated with the filters."""

    # A page position (core.paging); the view decodes it.
    cursor = forms.CharField(max_length=MAX_CURSOR_LENGTH, required=False)
    # An event id: the database's bigint bounds it.
    after = forms.IntegerField(min_value=0, max_value=2**63 - 1, required=False)
    live = forms.BooleanField(required=False)

    PAGING = ("cursor", "after", "live")


class EventFilter(django_filters.FilterSet):
    type = django_filters.MultipleChoiceFilter(
        method="filter_types", widget=forms.CheckboxSelectMultiple, label="Event types"
    )
    workflow = django_filters.CharFilter(
        field_name="workflow", max_length=100, validators=[validate_searchable]
    )
    lead = django_filters.CharFilter(
        method="filter_lead",
        max_length=32,
        label="Lead id",
        validators=[validate_searchable],
    )
    actor = django_filters.CharFilter(
        field_name="actor", max_length=150, validators=[validate_searchable]
    )
    correlation = django_filters.CharFilter(
        field_name="correlation_id",
        max_length=64,
        label="Correlation id",
        validators=[validate_searchable],
    )
    # An error group (audit.fingerprints), linked from the errors page.
    fingerprint = django_filters.CharFilter(
        field_name="fingerprint",
        max_length=16,
        label="Error group",
        validators=[validate_searchable],
    )
    q = django_filters.CharFilter(
        method="filter_text",
        max_length=200,
        label="Text in details",
        validators=[validate_searchable],
    )

    class Meta:
        model = AuditEvent
        fields: list[str] = []
        form = EventFilterForm

    def __init__(self, data=None, *, period: Period, **kwargs):
        kwargs.setdefault("queryset", AuditEvent.objects.all())
        super().__init__(data, **kwargs)
        self.period = period
        # Read per request: AUDIT_EXTRA_EVENT_TYPES may add types.
        self.filters["type"].extra["choices"] = sorted((name, name) for name in known_event_types())

    # --- filter methods -------------------------------------------------------------

    def filter_types(self, queryset: QuerySet, name: str, value: list[str]) -> QuerySet:
        # IN rather than django-filter's OR of equalities with DISTINCT.
        return queryset.filter(event_type__in=value) if value else queryset

    def filter_lead(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(lead_public_id__in=lead_id_spellings(value))

    def filter_text(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(details_contains(value))

    # --- what the view asks ----------------------------------------------------------

    def filter_queryset(
        self,
        queryset: QuerySet,
        *,
        without: tuple[str, ...] = (),
        from_ts: datetime | None = None,
        to_ts: datetime | None = None,
    ) -> QuerySet:
        """The events in the period matching every filter (but those named in `without`).

        `from_ts`/`to_ts` (inclusive) narrow the period to a keyset position. The
        narrower bound replaces the period's instead of joining it: given two upper
        bounds on the timestamp, SQLite may scan the index from the looser one.
        """
        data = self.form.cleaned_data
        for name, filter_ in self.filters.items():
            if name not in without:
                queryset = filter_.filter(queryset, data.get(name))
        if from_ts is not None and from_ts >= self.period.start:
            queryset = queryset.filter(timestamp__gte=from_ts)
        else:
            queryset = queryset.filter(timestamp__gte=self.period.start)
        if to_ts is not None and to_ts < self.period.end:
            return queryset.filter(timestamp__lte=to_ts)
        return queryset.filter(timestamp__lt=self.period.end)

    def events(
        self,
        *,
        without: tuple[str, ...] = (),
        from_ts: datetime | None = None,
        to_ts: datetime | None = None,
    ) -> QuerySet:
        return self.filter_queryset(
            self.queryset.all(), without=without, from_ts=from_ts, to_ts=to_ts
        )

    @property
    def values(self) -> dict:
        return self.form.cleaned_data

    @property
    def types(self) -> list[str]:
        return list(self.values.get("type") or [])

    @property
    def active(self) -> dict[str, object]:
        """The filters in use (for the export's audit event and the page's summary)."""
        return {name: self.values[name] for name in self.filters if self.values.get(name)}

    @property
    def rollups_answer(self) -> bool:
        """Counts can come from the rollups: only type and workflow filter the events."""
        return set(self.active) <= ROLLUP_FILTERS

    def error_message(self) -> str | None:
        """Why the query cannot be answered, or None; call before using the filters."""
        if not self.is_valid():
            parts = []
            for name, errors in self.errors.items():
                label = self.filters[name].label if name in self.filters else name
                parts.append(f"{label or name}: {' '.join(errors)}")
            return "; ".join(parts)
        text = self.values.get("q")
        if (
            text
            and not details_search_is_indexed(text)
            and not any(self.values.get(n) for n in NARROWING_FILTERS)
        ):
            max_days = settings.DASHBOARD_TEXT_SEARCH_MAX_DAYS
            if self.period.span > timedelta(days=max_days):
                return (
                    f"Text search for fewer than {INDEXED_SEARCH_MIN} characters covers at "
                    f"most {max_days} days unless a lead id or correlation id narrows it: "
                    "type more, choose a shorter range, or add one of those filters."
                )
        return None
