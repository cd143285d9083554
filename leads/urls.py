from django.urls import path

from leads.intake import api

app_name = "leads"

urlpatterns = [
    path("api/v1/leads", api.api_leads, name="api-leads"),
    path("api/v1/leads/batch", api.api_leads_batch, name="api-leads-batch"),
    path("f/<slug:slug>", api.public_form, name="public-form"),
]
