"""Periodic credit jobs. Each is idempotent: running twice, or on two workers, changes nothing."""

from celery import shared_task

from . import services


@shared_task(name="credits.grants_expire_due", acks_late=True)
def grants_expire_due_task() -> int:
    return services.grants_expire_due()


@shared_task(name="credits.rollups_refresh", acks_late=True)
def rollups_refresh_task() -> list[str]:
    """The programme roll-ups of this month (and of any month not final yet).

    The queued mark is cleared before anything is read, so a commit made while this runs
    queues a refresh of its own instead of being folded into one that started without it
    (and, run eagerly, a second grant within seconds of a first is not left out)."""
    services.rollups_refresh_mark_clear()
    return [month.isoformat() for month in services.rollups_refresh()]


@shared_task(name="credits.rollups_reconcile", acks_late=True)
def rollups_reconcile_task() -> dict:
    """Nightly: a random sample of accounts' roll-ups against their entries; drift is audited."""
    return services.account_rollups_reconcile()
