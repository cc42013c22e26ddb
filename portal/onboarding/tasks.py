"""Onboarding's Celery jobs. Each is idempotent: running twice, or on two workers, changes nothing.

The task names keep the `credits.` prefix they had when the allowance lived in credits: beat
entries and messages already queued name them so.
"""

from celery import shared_task

from portal.users.models import User

from . import allowance


@shared_task(name="credits.student_allowances_grant_month", acks_late=True)
def student_allowances_grant_month_task() -> int:
    return allowance.student_allowances_grant_month()


@shared_task(name="credits.student_allowance_grant", acks_late=True)
def student_allowance_grant_task(*, user_id: int) -> bool:
    user = User.objects.filter(pk=user_id).first()
    return user is not None and allowance.student_allowance_grant(user=user) is not None
