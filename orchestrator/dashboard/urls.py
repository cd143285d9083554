"""Every page of the staff dashboard (each view wears viewer_required or operator_required)."""

from django.urls import path

from orchestrator.dashboard.views import analytics, errors, events, overview, workflows
from orchestrator.dashboard.views import leads as lead_views
from orchestrator.dashboard.views import reports as report_views
from orchestrator.dashboard.views import saved_views as saved_view_views

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("events/", events.event_list, name="event-list"),
    path("events/export/", events.event_export, name="event-export"),
    path("events/exports/", events.event_exports, name="event-exports"),
    path(
        "events/exports/<int:job_id>/download/",
        events.event_export_download,
        name="event-export-download",
    ),
    path("events/views/", saved_view_views.saved_view_list, name="saved-views"),
    path("events/views/new/", saved_view_views.saved_view_create, name="saved-view-create"),
    path("events/views/<int:pk>/", saved_view_views.saved_view_update, name="saved-view-update"),
    path(
        "events/views/<int:pk>/delete/",
        saved_view_views.saved_view_delete,
        name="saved-view-delete",
    ),
    path("events/<int:pk>/", events.event_detail, name="event-detail"),
    path("errors/", errors.error_list, name="error-list"),
    path("errors/<str:fingerprint>/", errors.error_detail, name="error-detail"),
    path("errors/<str:fingerprint>/state/", errors.error_group_state, name="error-group-state"),
    path("leads/", lead_views.lead_list, name="lead-list"),
    # Lead ids come from imports and CRMs too, and may hold a "/": <path:>, and the
    # actions first, so that "<id>/requalify/" is not read as a lead id.
    path("leads/<path:public_id>/requalify/", lead_views.lead_requalify, name="lead-requalify"),
    path("leads/<path:public_id>/retry-crm/", lead_views.lead_retry_crm, name="lead-retry-crm"),
    path(
        "leads/<path:public_id>/cancel-sequence/",
        lead_views.lead_cancel_sequence,
        name="lead-cancel-sequence",
    ),
    path("leads/<path:public_id>/", lead_views.lead_detail, name="lead-detail"),
    path("analytics/", analytics.analytics, name="analytics"),
    path("workflows/", workflows.workflow_runs, name="workflow-runs"),
    path("reports/", report_views.report_list, name="report-list"),
    path("reports/<str:kind>/<str:day>/", report_views.report_detail, name="report-detail"),
    path(
        "reports/<str:kind>/<str:day>/download/",
        report_views.report_download,
        name="report-download",
    ),
]
