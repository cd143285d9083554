"""The project's urls with the follow-up endpoints mounted at the root, as deployed."""

from django.urls import include, path

from orchestrator.urls import urlpatterns as project_urlpatterns

urlpatterns = [path("", include("leads.followups.urls")), *project_urlpatterns]
