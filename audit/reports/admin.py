from django.contrib import admin

from audit.reports.models import ReportSend


@admin.register(ReportSend)
class ReportSendAdmin(admin.ModelAdmin):
    list_display = ["kind", "period_start", "period_end", "number", "sent_at", "actor", "error"]
    list_filter = ["kind"]
    date_hierarchy = "period_start"

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
