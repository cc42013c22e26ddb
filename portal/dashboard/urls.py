"""The programme pages, under /programme/, page by page as views/ has them.

Organisations are named by their public UUID; students by their hub username, the public name a
person's notebook servers already carry (users have no UUID, and integer keys stay private).
"""

from django.urls import path, re_path

from .views import accounts, audit, cluster, cohorts, directory, models, overview, reports, review

app_name = "dashboard"

urlpatterns = [
    path("", overview.overview, name="overview"),
    # The audit log
    path("audit/", audit.audit_log, name="audit"),
    path("audit/export.csv", audit.audit_export, name="audit_export"),
    # Cohorts
    path("cohorts/", cohorts.cohorts, name="cohorts"),
    path("cohorts/<uuid:public_id>/", cohorts.cohort_detail, name="cohort"),
    path(
        "cohorts/<uuid:public_id>/deactivate/",
        cohorts.cohort_deactivate_view,
        name="cohort_deactivate",
    ),
    # The cluster
    path("cluster/", cluster.cluster, name="cluster"),
    # Credit applications: the review queue and the review page
    path("applications/", review.applications_queue, name="applications"),
    path("applications/<uuid:public_id>/", review.application_review, name="application_review"),
    path(
        "applications/<uuid:public_id>/<str:action>/",
        review.application_review_action,
        name="application_review_action",
    ),
    # Credit accounts
    path("grants/<uuid:public_id>/revoke/", accounts.grant_revoke, name="grant_revoke"),
    path("accounts/<uuid:public_id>/", accounts.account_detail, name="account"),
    path("accounts/<uuid:public_id>/adjust/", accounts.account_adjust, name="account_adjust"),
    # The directory: organisations and students, and their suspension
    path("organisations/", directory.organisations, name="organisations"),
    path("organisations/<uuid:public_id>/", directory.organisation, name="organisation"),
    path(
        "organisations/<uuid:public_id>/suspend/",
        directory.organisation_suspend_view,
        name="organisation_suspend",
    ),
    path(
        "organisations/<uuid:public_id>/reactivate/",
        directory.organisation_reactivate_view,
        name="organisation_reactivate",
    ),
    path("students/", directory.students, name="students"),
    path("students/<str:hub_username>/", directory.student, name="student"),
    path(
        "students/<str:hub_username>/suspend/",
        directory.student_suspend_view,
        name="student_suspend",
    ),
    path(
        "students/<str:hub_username>/reactivate/",
        directory.student_reactivate_view,
        name="student_reactivate",
    ),
    # The model API: the catalogue, deployments and model usage
    path("models/", models.models_list, name="models"),
    path("models/new/", models.model_create, name="model_create"),
    path("models/deployments/", models.deployments, name="model_deployments"),
    path("models/usage/", models.model_usage, name="model_usage"),
    path("models/usage/export.csv", models.model_usage_export, name="model_usage_export"),
    path("models/<uuid:public_id>/", models.model_detail, name="model"),
    path("models/<uuid:public_id>/withdraw/", models.model_withdraw, name="model_withdraw"),
    path("models/<uuid:public_id>/deploy/", models.model_deploy, name="model_deploy"),
    path(
        "models/deployments/<uuid:public_id>/scale/",
        models.deployment_scale_view,
        name="deployment_scale",
    ),
    path(
        "models/deployments/<uuid:public_id>/stop/",
        models.deployment_stop_view,
        name="deployment_stop",
    ),
    # Reports
    path("reports/", reports.reports, name="reports"),
    re_path(
        r"^reports/export\.(?P<extension>csv|xlsx)$",
        reports.reports_export,
        name="reports_export",
    ),
    re_path(
        r"^reports/monthly/(?P<month>\d{4}-\d{2})/$",
        reports.report_monthly,
        name="report_monthly",
    ),
]
