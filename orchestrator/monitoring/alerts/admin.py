from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from orchestrator.monitoring.alerts import services
from orchestrator.monitoring.alerts.models import AlertChannel, AlertRule, Delivery, Incident


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "target", "secret_env", "enabled"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "target"]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "enabled", "snooze_until", "notify_resolved"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    filter_horizontal = ["channels"]
    actions = ["snooze_hour", "snooze_day", "unsnooze"]

    def _snooze(self, request: HttpRequest, queryset: QuerySet[AlertRule], hours: int) -> None:
        until = timezone.now() + timedelta(hours=hours) if hours else None
        for rule in queryset:
            services.snooze_rule(rule=rule, until=until, actor=_actor(request))
        self.message_user(request, f"Updated {queryset.count()} rule(s).", messages.SUCCESS)

    @admin.action(description="Snooze for 1 hour", permissions=["change"])
    def snooze_hour(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        self._snooze(request, queryset, 1)

    @admin.action(description="Snooze for 24 hours", permissions=["change"])
    def snooze_day(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        self._snooze(request, queryset, 24)

    @admin.action(description="End the snooze", permissions=["change"])
    def unsnooze(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        self._snooze(request, queryset, 0)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ["channel", "notice", "status", "attempts", "next_attempt_at", "sent_at", "last_error"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Read-only: incidents are the evaluator's record; snoozing is the one action."""

    list_display = ["rule", "key", "state", "opened_at", "resolved_at", "snooze_until", "summary"]
    list_filter = ["state", "rule"]
    list_select_related = ["rule"]
    search_fields = ["=key", "summary"]
    date_hierarchy = "opened_at"
    inlines = [DeliveryInline]
    actions = ["snooze_hour", "snooze_day", "unsnooze"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in Incident._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def _snooze(self, request: HttpRequest, queryset: QuerySet[Incident], hours: int) -> None:
        until = timezone.now() + timedelta(hours=hours) if hours else None
        for incident in queryset.select_related("rule"):
            services.snooze_incident(incident=incident, until=until, actor=_actor(request))
        self.message_user(request, f"Updated {queryset.count()} incident(s).", messages.SUCCESS)

    @admin.action(description="Snooze for 1 hour", permissions=["change"])
    def snooze_hour(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        self._snooze(request, queryset, 1)

    @admin.action(description="Snooze for 24 hours", permissions=["change"])
    def snooze_day(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        self._snooze(request, queryset, 24)

    @admin.action(description="End the snooze", permissions=["change"])
    def unsnooze(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        self._snooze(request, queryset, 0)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "incident", "channel", "notice", "status", "attempts", "sent_at"]
    list_filter = ["status", "notice", "channel"]
    list_select_related = ["incident__rule", "channel"]
    actions = ["retry"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Send again on the next check_alerts pass", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = sum(services.retry_delivery(delivery=d) for d in queryset)
        self.message_user(request, f"Queued {count} failed delivery(ies).", messages.SUCCESS)
