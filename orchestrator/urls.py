from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from orchestrator.accounts import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm
from orchestrator.monitoring.health import healthz

# The admin's login counts and refuses failures like the dashboard's.
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            redirect_authenticated_user=False, authentication_form=ThrottledAuthenticationForm
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("leads.urls")),
    path("", include("orchestrator.api.urls")),
    path("", include("leads.followups.urls")),
    path("", include("orchestrator.dashboard.urls")),
]
