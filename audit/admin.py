import json

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html

from audit.models import AuditEvent, AuditSeal
from audit.types import known_event_types


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows, so a page load never runs COUNT(*) over the whole table."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP + 1].count()  # type: ignore[attr-defined]  # a QuerySet


class EventTypeFilter(admin.SimpleListFilter):
    title = "event type"
    parameter_name = "event_type"

    def lookups(self, request, model_admin):  # type: ignore[no-untyped-def]
        # From the registry, not SELECT DISTINCT over millions of rows.
        return [(name, name) for name in sorted(known_event_types())]

    def queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        value = self.value()
        return queryset.filter(event_type=value) if value else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "timestamp", "event_type", "actor", "lead_public_id", "workflow"]
    list_filter = [EventTypeFilter]
    # Exact matches only: each is an indexed lookup, never a LIKE scan.
    search_fields = ["=lead_public_id", "=correlation_id"]
    search_help_text = "Exact lead id (LEAD-000123) or correlation id."
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    readonly_fields = [
        "id",
        "uuid",
        "timestamp",
        "event_type",
        "actor",
        "lead_public_id",
        "workflow",
        "correlation_id",
        "pretty_details",
        "error_type",
        "error_message",
        "traceback",
        "mac",
    ]
    exclude = ["details"]

    @admin.display(description="details")
    def pretty_details(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True))


@admin.register(AuditSeal)
class AuditSealAdmin(ReadOnlyAdmin):
    list_display = ["number", "created_at", "event_count", "high_water", "digest"]
    paginator = CappedCountPaginator
    show_full_result_count = False
