from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic.base import RedirectView

from orchestrator.accounts import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm
from orchestrator.monitoring.health import healthz


class FaviconView(RedirectView):
    """Browsers ask for /favicon.ico where a page names no icon (a CSV or JSON answer,
    the admin): the dashboard's icon rather than a 404 in every log. Resolved per
    request: with the manifest storage the name is known only after collectstatic."""

    permanent = True

    def get_redirect_url(self, *args: object, **kwargs: object) -> str:
        return static("dashboard/favicon.svg")


# The admin's login counts and refuses failures like the dashboard's.
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
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
