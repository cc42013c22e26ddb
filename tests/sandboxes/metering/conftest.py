from tests.sandboxes.launcher.conftest import _no_hub_tasks, enqueued  # noqa: F401
