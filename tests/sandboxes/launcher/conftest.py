import pytest

from .helpers import tasks_recorded


@pytest.fixture(autouse=True)
def _no_hub_tasks(monkeypatch):
    """These tests exercise the portal's side only: the Celery tasks that would talk to the hub
    are recorded instead of run (the end-to-end tests run them against a real hub)."""
    return tasks_recorded(monkeypatch, [], "sandbox_start", "sandbox_stop")


@pytest.fixture
def enqueued(_no_hub_tasks):
    return _no_hub_tasks
