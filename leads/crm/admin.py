from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from leads.crm.models import CrmCall, CrmConnection, CrmRecord


@admin.register(CrmConnection)
class CrmConnectionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_url", "active", "created_at"]
    list_filter = ["kind", "active"]
    search_fields = ["name"]


@admin.register(CrmRecord)
class CrmRecordAdmin(admin.ModelAdmin):
    list_display = [
        "lead",
        "connection",
        "status",
        "external_id",
        "attempts",
        "last_synced_at",
        "next_attempt_at",
    ]
    list_filter = ["status", "connection"]
    list_select_related = ["lead", "connection"]
    search_fields = ["=external_id", "=lead__public_id", "=lead__email"]
    raw_id_fields = ["lead"]
    # Written by the sync; the action below is the way to ask for another try.
    readonly_fields = [
        "external_id",
        "attempts",
        "deferrals",
        "create_attempted_at",
        "last_error",
        "last_synced_at",
        "next_attempt_at",
        "locked_until",
        "created_at",
        "updated_at",
    ]
    actions = ["queue_retry"]

    @admin.action(description="Sync again on the next sync_crm run", permissions=["change"])
    def queue_retry(self, request: HttpRequest, queryset: QuerySet[CrmRecord]) -> None:
        # Pending rather than syncing here: a CRM outage must not hang the admin.
        count = queryset.update(status=CrmRecord.Status.PENDING, next_attempt_at=None)
        self.message_user(request, f"Queued {count} record(s).", messages.SUCCESS)


@admin.register(CrmCall)
class CrmCallAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "connection",
        "operation",
        "method",
        "path",
        "status_code",
        "outcome",
        "latency_ms",
        "attempt",
    ]
    list_filter = ["outcome", "connection", "operation"]
    list_select_related = ["connection"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CrmCall | None = None) -> bool:
        return False
