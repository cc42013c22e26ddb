"""The cohorts' pages: every cohort with its seats taken, and who joined one."""

import datetime as dt

from django.db.models import Count, QuerySet

from portal.onboarding.models import Cohort, StudentProfile

from .figures import this_month, used_in_month


def cohorts_list() -> QuerySet[Cohort]:
    return (
        Cohort.objects.select_related("university")
        .annotate(joined=Count("students"))
        .order_by("-created_at")
    )


def cohort_members(*, cohort: Cohort, month: dt.date | None = None) -> QuerySet[StudentProfile]:
    """The cohort's students, newest first, each with `used_credit_seconds` this month (a
    correlated sum per row of the account's usage roll-ups: a page of rows, one query)."""
    month = month or this_month()
    return (
        StudentProfile.objects.filter(cohort=cohort)
        .select_related("user", "university")
        .annotate(used_credit_seconds=used_in_month("user__credit_account__id", month))
        .order_by("-created_at", "-pk")
    )
