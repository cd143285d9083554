from django.urls import path

from orchestrator.api import views

app_name = "api"

# Every route here must be in the OpenAPI document (tests/orchestrator/api/test_schema.py).
urlpatterns = [
    path("api/v1/events", views.events, name="events"),
    # `path`: a lead id may hold any printable character, "/" included.
    path("api/v1/leads/<path:lead_id>/history", views.lead_history, name="lead-history"),
    path("api/v1/schema", views.schema, name="schema"),
]
