"""Celery tasks of metering. All are safe to run twice and to run concurrently: charges are keyed
by (run, interval start) in the ledger, and ticks take an advisory lock."""

from __future__ import annotations

import dataclasses

from celery import shared_task

from . import services


@shared_task(name="metering.tick", acks_late=True)
def tick_task() -> dict:
    return dataclasses.asdict(services.tick())


@shared_task(name="metering.run_settle", acks_late=True)
def run_settle_task(run_id: int) -> dict:
    """Charge an ended run's last partial interval now, not at the next tick."""
    result = services.tick(run_ids=[run_id], sample=False, wait=True)
    return {"charged": result.charged, "unpaid": result.unpaid}


@shared_task(name="metering.samples_prune", acks_late=True)
def samples_prune_task() -> dict:
    return services.samples_prune()


@shared_task(name="metering.reconcile", acks_late=True)
def reconcile_task() -> dict:
    return services.reconcile()
