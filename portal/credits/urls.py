from django.urls import path

from . import views

app_name = "credits"

urlpatterns = [
    path("organisations/<slug:slug>/credits/", views.organisation_credits, name="organisation"),
    path(
        "organisations/<slug:slug>/applications/new/",
        views.application_new,
        name="application_new",
    ),
    path(
        "organisations/<slug:slug>/applications/<uuid:public_id>/",
        views.application_detail,
        name="application",
    ),
    path(
        "organisations/<slug:slug>/applications/<uuid:public_id>/<str:action>/",
        views.application_action,
        name="application_action",
    ),
    path(
        "credits/accounts/<uuid:public_id>/statements/<str:month>/",
        views.statement,
        name="statement",
    ),
    path(
        "credits/accounts/<uuid:public_id>/statements/<str:month>.csv",
        views.statement_csv,
        name="statement_csv",
    ),
]
