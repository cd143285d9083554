"""Public endpoints the links in follow-up emails point at.

Mount at the root of FOLLOWUPS_BASE_URL: path("", include("leads.followups.urls")).
"""

from django.urls import path

from leads.followups import views

app_name = "followups"

urlpatterns = [
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
    path("o/<str:token>.gif", views.open_pixel, name="open"),
    path("c/<str:token>", views.click, name="click"),
]
