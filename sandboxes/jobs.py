"""Enqueue a Celery task after the commit, by the name it is registered under.

A tasks module imports the services it calls; were the services to import it back to enqueue
its tasks, the two would import each other. So services name the task they set off (the
`name=` of its `@shared_task`, the name beat and the worker know it by) and never import a
tasks module. The task is looked up in Celery's registry, so an eager run (the tests'
CELERY_TASK_ALWAYS_EAGER) runs it as a direct call would, and anything that replaces the
registered task's `delay` (a test's recorder) sees the call.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def registered_task(name: str):
    """The task registered as `name`. The web process has not imported the tasks modules (a
    worker imports them at start), so the first lookup runs Celery's autodiscovery."""
    if name not in current_app.tasks:
        current_app.loader.import_default_modules()
    return current_app.tasks[name]


def enqueue_after_commit(name: str, *args, **kwargs) -> None:
    """`delay(*args, **kwargs)` on the task registered as `name`, once the current transaction
    commits (at once when none is open); nothing on a rollback."""
    transaction.on_commit(lambda: registered_task(name).delay(*args, **kwargs))
