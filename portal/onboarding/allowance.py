"""The monthly student allowance: each student's GPU-hours for the month, granted once.

It is a grant like any other (credits.services.grant_issue), from the programme's default or
the cohort's override, expiring with the month, under the key
`student-allowance:<user>:<YYYY-MM>`. Granted when a student joins (onboarding.services) and by
a daily Celery beat job (onboarding.tasks), which makes every run after a month's first a no-op.
"""

import datetime as dt

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.credits.models import CreditGrant, LedgerTransaction
from portal.credits.selectors import grant_for_key
from portal.credits.services import account_for_student, grant_issue
from portal.credits.units import month_bounds

from .models import StudentProfile


def allowance_key(user, month: dt.date) -> str:
    return f"student-allowance:{user.pk}:{month:%Y-%m}"


def student_allowance_grant(*, user, month: dt.date | None = None) -> CreditGrant | None:
    """This month's allowance for one student, once (the key is per student and month).

    The cohort's override wins over the programme default; zero means no allowance.
    """
    month = month or timezone.localdate()
    already = grant_for_key(idempotency_key=allowance_key(user, month))
    if already is not None:
        return already  # once a month, whatever the cohort's allowance has become since
    profile = StudentProfile.objects.select_related("cohort").filter(user=user).first()
    if profile is None or not user.is_active:
        return None
    hours = settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS
    if profile.cohort and profile.cohort.monthly_allowance_gpu_hours is not None:
        hours = profile.cohort.monthly_allowance_gpu_hours
    if hours <= 0:
        return None
    _start, following = month_bounds(month)
    if following <= timezone.now():
        return None  # a month already over grants nothing
    return grant_issue(
        account=account_for_student(user),
        credit_seconds=hours * 3600,
        rate_pkr_per_gpu_hour=settings.STUDENT_ALLOWANCE_RATE_PKR_PER_GPU_HOUR,
        expires_at=following,
        source=CreditGrant.Source.ALLOWANCE,
        idempotency_key=allowance_key(user, month),
        note=_("Monthly student allowance %(month)s") % {"month": f"{month:%Y-%m}"},
        kind=LedgerTransaction.Kind.ALLOWANCE,
    )


def student_allowances_grant_month(*, month: dt.date | None = None) -> int:
    """Every student's allowance for the month; a second run grants nothing new."""
    count = 0
    for profile in StudentProfile.objects.select_related("user").iterator():
        if student_allowance_grant(user=profile.user, month=month) is not None:
            count += 1
    return count
