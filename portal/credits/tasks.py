"""Periodic credit jobs. Each is idempotent: running twice, or on two workers, changes nothing."""

from celery import shared_task

from . import services


@shared_task(name="credits.grants_expire_due", acks_late=True)
def grants_expire_due_task() -> int:
    return services.grants_expire_due()


@shared_task(name="credits.rollups_refresh", acks_late=True)
def rollups_refresh_task() -> list[str]:
    """The programme roll-ups of this month (and of any month not final yet)."""
    return [month.isoformat() for month in services.rollups_refresh()]


@shared_task(name="credits.rollups_reconcile", acks_late=True)
def rollups_reconcile_task() -> dict:
    """Nightly: a random sample of accounts' roll-ups against their entries; drift is audited."""
    return services.account_rollups_reconcile()
