from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from leads.intake.apikeys import api_key_revoke
from leads.models import ApiKey, Lead, LeadSource


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["public_id", "email", "name", "company", "source", "status", "created_at"]
    list_filter = ["status", "source"]
    list_select_related = ["source"]
    search_fields = ["=public_id", "=email", "company"]
    show_full_result_count = False


@admin.register(LeadSource)
class LeadSourceAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "workflow", "dedupe_window_hours", "active"]
    list_filter = ["kind", "active"]
    list_select_related = ["workflow"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    # Written by the inbox poll; editing it by hand would re-read or skip mail.
    readonly_fields = ["state"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created by `manage.py create_api_key` (the only place a key is shown)."""

    list_display = [
        "name",
        "prefix",
        "scopes",
        "source",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["source", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["source"]
    search_fields = ["=prefix", "name"]
    # key_hash is left out everywhere; everything else is read-only, since
    # the name is what the audit trail calls the key (actor "api:<name>").
    # Scopes too: widening a key's rights is a new key, created (and audited) by the command.
    fields = ["name", "prefix", "scopes", "source", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        # Revoke instead: the row tells which key the audit trail's actor was.
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = f"user:{request.user.get_username()}"
        revoked = sum(api_key_revoke(key=key, actor=actor) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
