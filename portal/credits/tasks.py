"""Periodic credit jobs. Each is idempotent: running twice, or on two workers, changes nothing."""

from celery import shared_task

from . import services


@shared_task(name="credits.grants_expire_due", acks_late=True)
def grants_expire_due() -> int:
    return services.grants_expire_due()


@shared_task(name="credits.student_allowances_grant_month", acks_late=True)
def student_allowances_grant_month() -> int:
    return services.student_allowances_grant_month()


@shared_task(name="credits.student_allowance_grant", acks_late=True)
def student_allowance_grant(*, user_id: int) -> bool:
    from portal.users.models import User

    user = User.objects.filter(pk=user_id).first()
    return user is not None and services.student_allowance_grant(user=user) is not None
