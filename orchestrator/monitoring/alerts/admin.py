from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from orchestrator.monitoring.alerts import services
from orchestrator.monitoring.alerts.checks import channel_problems
from orchestrator.monitoring.alerts.models import AlertChannel, AlertRule, Delivery, Incident


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


class AlertChannelForm(forms.ModelForm):
    class Meta:
        model = AlertChannel
        fields = ["name", "kind", "target", "secret_env", "url_env", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # A Slack row's form has no target field (it may still hold the old
        # URL): clear it before validation, so neither staying Slack nor
        # turning into a webhook keeps, or shows, the secret URL.
        if self.instance.pk and "target" not in self.fields:
            self.instance.target = ""
        return data

    def add_error(self, field: str | None, error: Any) -> None:
        # Model validation may blame target, which a Slack row's form leaves
        # out (a Slack channel turned into a webhook): show it above the form.
        if field is None and isinstance(error, ValidationError) and hasattr(error, "error_dict"):
            moved: dict[str, list[ValidationError]] = {}
            for name, errors in error.error_dict.items():
                moved.setdefault(name if name in self.fields else NON_FIELD_ERRORS, []).extend(
                    errors
                )
            error = ValidationError(moved)
        super().add_error(field, error)


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    """Shows names of credential variables, never a credential (a Slack URL included)."""

    form = AlertChannelForm
    list_display = ["name", "kind", "destination", "secret_env", "url_env", "enabled"]
    list_filter = ["kind", "enabled"]
    # Not target: searching it would reveal a Slack URL still stored there, a
    # character at a time.
    search_fields = ["name"]

    @admin.display(description="Target")
    def destination(self, obj: AlertChannel) -> str:
        if obj.kind == "slack":
            return f"${obj.url_env}" if obj.url_env else "-"
        return obj.target

    def get_fields(self, request: HttpRequest, obj: AlertChannel | None = None) -> list[str]:
        fields = ["name", "kind", "target", "secret_env", "url_env", "enabled"]
        if obj is not None and obj.kind == "slack":
            fields.remove("target")
        return fields

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        for problem in channel_problems():
            self.message_user(request, problem, messages.WARNING)
        return super().changelist_view(request, extra_context)


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
