from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from orchestrator.monitoring.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=False),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("leads.urls")),
    path("", include("leads.followups.urls")),
    path("", include("orchestrator.dashboard.urls")),
]
