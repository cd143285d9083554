from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("leads.urls")),
    path("", include("leads.email.urls")),
    # The dashboard grows here; until then staff land on the audit trail.
    path("", RedirectView.as_view(pattern_name="admin:audit_auditevent_changelist")),
]
