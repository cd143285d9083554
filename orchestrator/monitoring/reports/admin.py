from django.contrib import admin

from audit.models import IntegrityCheck
from orchestrator.monitoring.reports.models import ReportSend


class ReadOnlyAdmin(admin.ModelAdmin):
    # Records of what happened: written by commands, never by hand.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ReportSend)
class ReportSendAdmin(ReadOnlyAdmin):
    list_display = ["kind", "period_start", "period_end", "number", "sent_at", "actor", "error"]
    list_filter = ["kind"]
    date_hierarchy = "period_start"


@admin.register(IntegrityCheck)
class IntegrityCheckAdmin(ReadOnlyAdmin):
    list_display = ["checked_at", "ok", "events_checked", "seals_checked", "unsealed"]
    list_filter = ["ok"]
    date_hierarchy = "checked_at"

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
