"""The admin and the dashboard, as mounted in orchestrator.urls (alert links point there)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("orchestrator.dashboard.urls")),
]
