from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("audit/", views.audit_log, name="audit"),
    path("cohorts/", views.cohorts, name="cohorts"),
]
