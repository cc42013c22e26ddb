import pytest


@pytest.fixture(autouse=True)
def _no_hub_tasks(monkeypatch):
    """These tests exercise the portal's side only: the Celery tasks that would talk to the hub
    are recorded instead of run (the end-to-end tests run them against a real hub)."""
    from sandboxes.launcher import tasks

    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def delay(self, *args, **kwargs):
            calls.append((self.name, args, kwargs))

    for name in ("sandbox_start", "sandbox_stop"):
        monkeypatch.setattr(tasks, name, Recorder(name))
    return calls


@pytest.fixture
def enqueued(_no_hub_tasks):
    return _no_hub_tasks
