"""Programme pages: reports (included by portal/dashboard/urls.py)."""

from django.urls import path, re_path

from . import report_views

urlpatterns: list = [
    path("reports/", report_views.reports, name="reports"),
    re_path(
        r"^reports/export\.(?P<extension>csv|xlsx)$",
        report_views.reports_export,
        name="reports_export",
    ),
    re_path(
        r"^reports/monthly/(?P<month>\d{4}-\d{2})/$",
        report_views.report_monthly,
        name="report_monthly",
    ),
]
