"""Celery tasks of model usage. Both are safe to run twice and at once: a posting is one
transaction per account under its spend lock, and a deletion deletes what is due."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="usage.model_charges_post", acks_late=True)
def model_charges_post_task() -> int:
    """Post finished requests, after releasing the holds of any a dead worker left behind."""
    services.requests_abandoned_release()
    return services.model_charges_post()


@shared_task(name="usage.request_logs_delete_expired", acks_late=True)
def request_logs_delete_expired_task() -> int:
    return services.request_logs_delete_expired()
