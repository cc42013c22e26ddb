"""Periodic credit jobs. Each is idempotent: running twice, or on two workers, changes nothing."""

from celery import shared_task

from . import services


@shared_task(name="credits.grants_expire_due", acks_late=True)
def grants_expire_due_task() -> int:
    return services.grants_expire_due()
