from django.urls import path

from . import directory_urls, reports_urls, views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("audit/", views.audit_log, name="audit"),
    path("cohorts/", views.cohorts, name="cohorts"),
    path("cohorts/<uuid:public_id>/", views.cohort_detail, name="cohort"),
    path(
        "cohorts/<uuid:public_id>/deactivate/",
        views.cohort_deactivate_view,
        name="cohort_deactivate",
    ),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("cluster/", views.cluster, name="cluster"),
    path("applications/", views.applications_queue, name="applications"),
    path("applications/<uuid:public_id>/", views.application_review, name="application_review"),
    path(
        "applications/<uuid:public_id>/<str:action>/",
        views.application_review_action,
        name="application_review_action",
    ),
    path("grants/<uuid:public_id>/revoke/", views.grant_revoke, name="grant_revoke"),
    path("accounts/<uuid:public_id>/", views.account_detail, name="account"),
    path("accounts/<uuid:public_id>/adjust/", views.account_adjust, name="account_adjust"),
    *directory_urls.urlpatterns,
    *reports_urls.urlpatterns,
]
