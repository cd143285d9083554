"""The lead list's filters (django-filter): parsed and validated from the query string."""

from typing import Any

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, QuerySet

from core.periods import Period
from leads.models import Lead, LeadSource
from orchestrator.dashboard.render import validate_searchable
from orchestrator.dashboard.selectors.leads import SEARCH_MAX_LENGTH, SEARCH_MIN_LENGTH, lead_search

# Bounds of a score filter: scores are small, and a huge number would overflow the query.
SCORE_BOUND = 100_000
CREATED_CHOICES = [("period", "in the date range"), ("any", "any time")]


class IntegerFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class LeadFilterForm(forms.Form):
    def clean(self) -> dict[str, Any]:
        data = super().clean()
        low, high = data.get("score_min"), data.get("score_max")
        if low is not None and high is not None and low > high:
            raise forms.ValidationError(f"score from ({low}) is above score to ({high})")
        return data


class LeadFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="filter_q",
        label="Search",
        min_length=SEARCH_MIN_LENGTH,
        max_length=SEARCH_MAX_LENGTH,
        validators=[validate_searchable],
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "part of an email, name or company; a lead id"}
        ),
    )
    status = django_filters.ChoiceFilter(choices=Lead.Status.choices, empty_label="any")
    source = django_filters.ModelChoiceFilter(
        queryset=LeadSource.objects.order_by("name"), to_field_name="slug", empty_label="any"
    )
    owner = django_filters.ModelChoiceFilter(
        # Only users who own a lead: any other choice would list nothing.
        queryset=get_user_model()
        .objects.filter(Exists(Lead.objects.filter(owner=OuterRef("pk"))))
        .order_by("username"),
        to_field_name="username",
        empty_label="anyone",
        null_label="unassigned",
        null_value="none",
    )
    score_min = IntegerFilter(
        field_name="score",
        lookup_expr="gte",
        label="Score from",
        min_value=-SCORE_BOUND,
        max_value=SCORE_BOUND,
    )
    score_max = IntegerFilter(
        field_name="score",
        lookup_expr="lte",
        label="Score to",
        min_value=-SCORE_BOUND,
        max_value=SCORE_BOUND,
    )
    created = django_filters.ChoiceFilter(
        choices=CREATED_CHOICES, method="filter_created", empty_label=None, label="Created"
    )

    class Meta:
        model = Lead
        fields: list[str] = []
        form = LeadFilterForm

    def __init__(self, data: Any = None, *args: Any, period: Period, **kwargs: Any) -> None:
        super().__init__(data, *args, **kwargs)
        self.period = period

    def filter_q(self, qs: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        return lead_search(qs, text=value)

    def filter_created(self, qs: QuerySet[Lead], name: str, value: str) -> QuerySet[Lead]:
        return qs  # applied in filter_queryset, which also sees the default

    def filter_queryset(self, queryset: QuerySet[Lead]) -> QuerySet[Lead]:
        qs = super().filter_queryset(queryset)
        # The global date range applies unless "any time" is asked for.
        if self.form.cleaned_data.get("created") != "any":
            qs = qs.filter(created_at__gte=self.period.start, created_at__lt=self.period.end)
        return qs

    def error_message(self) -> str:
        """Every form error as one line, naming the parameter."""
        parts = []
        for name, errors in self.form.errors.items():
            prefix = "" if name == "__all__" else f"{name}: "
            parts.append(prefix + " ".join(str(e) for e in errors))
        return "Bad filter: " + "; ".join(parts)
