from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from leads.followups.models import Enrollment, OutboundEmail, Sequence, SequenceStep
from leads.followups.services import MANUAL, cancel, requeue


class SequenceStepInline(admin.StackedInline):
    model = SequenceStep
    extra = 0
    ordering = ["position"]


@admin.register(Sequence)
class SequenceAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "sender", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [SequenceStepInline]


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    list_display = ["lead", "sequence", "status", "cancel_reason", "next_send_at", "created_at"]
    list_filter = ["status", "cancel_reason", "sequence"]
    list_select_related = ["lead", "sequence"]
    search_fields = ["=lead__public_id", "=lead__email"]
    raw_id_fields = ["lead"]
    # Status changes go through the cancel action, which writes the audit event.
    readonly_fields = ["status", "cancel_reason", "next_step", "next_send_at", "finished_at"]
    actions = ["cancel_enrollments"]

    @admin.action(description="Cancel selected enrollments", permissions=["change"])
    def cancel_enrollments(self, request: HttpRequest, queryset: QuerySet[Enrollment]) -> None:
        actor = f"user:{request.user.get_username()}"
        done = sum(cancel(enrollment=e, reason=MANUAL, actor=actor) for e in queryset)
        self.message_user(request, f"Cancelled {done} enrollment(s).", messages.SUCCESS)


@admin.register(OutboundEmail)
class OutboundEmailAdmin(admin.ModelAdmin):
    list_display = ["message_id", "recipient", "status", "due_at", "attempts", "sent_at"]
    list_filter = ["status", "step__sequence"]
    list_select_related = ["step__sequence"]
    search_fields = ["=message_id", "=recipient"]
    date_hierarchy = "due_at"
    readonly_fields = [f.name for f in OutboundEmail._meta.fields]
    actions = ["requeue_sending"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(
        description="Requeue emails stuck in 'sending' (they may have gone out)",
        permissions=["change"],
    )
    def requeue_sending(self, request: HttpRequest, queryset: QuerySet[OutboundEmail]) -> None:
        count = requeue(emails=queryset)
        self.message_user(request, f"Requeued {count} email(s).", messages.WARNING)
