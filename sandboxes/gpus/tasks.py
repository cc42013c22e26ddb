"""Periodic GPU inventory sync (also run once when `make run` starts)."""

from celery import shared_task

from .services import inventory_sync


@shared_task(name="gpus.inventory_sync", acks_late=True)
def inventory_sync_task() -> dict:
    result = inventory_sync()
    return {"backend": result.backend, "added": result.added, "missing": result.missing}
