from django.contrib import admin

from leads.models import Lead


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ["public_id", "email", "name", "company", "source", "status", "created_at"]
    list_filter = ["status", "source"]
    search_fields = ["=public_id", "=email", "company"]
    show_full_result_count = False
