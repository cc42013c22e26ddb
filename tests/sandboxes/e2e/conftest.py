"""End to end: the real portal (live server), a real Celery worker, a real JupyterHub with the
real spawner, real Docker containers of the real image, real Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from portal.celery import app as celery_app
from tests.sandboxes.hub import running_hub
from tests.sandboxes.spawner.conftest import docker_client, sandbox_image  # noqa: F401

REPO = Path(__file__).resolve().parents[3]


def _worker_environment() -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings.test", "DATABASE_URL": url}


@contextlib.contextmanager
def celery_worker(env: dict[str, str], log_path: Path):
    """A real worker process on the test database and the test Redis."""
    worker_env = {**_worker_environment(), **env}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "portal",
                "worker",
                "--pool=threads",
                "--concurrency=4",
                "--loglevel=INFO",
                f"--hostname=e2e-{secrets.token_hex(3)}@%h",
            ],
            cwd=REPO,
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery worker did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def celery_beat(env: dict[str, str], log_path: Path):
    """A real beat scheduler on the test database (its own schedule file: two can run)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "portal",
                "beat",
                "--loglevel=INFO",
                "--scheduler=celery.beat:PersistentScheduler",
                f"--schedule={log_path.with_suffix('.schedule')}",
            ],
            cwd=REPO,
            env={**_worker_environment(), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


class AsgiServer:
    """The portal's ASGI application (HTTP and WebSockets) under uvicorn, in a thread of the test
    process, as `make run` serves it: pytest-django's live server speaks WSGI only, and the
    browser needs the live sandbox WebSocket."""

    def __init__(self):
        import uvicorn

        from portal.asgi import application
        from tests.sandboxes.hub import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def portal_server(transactional_db):
    with AsgiServer() as server:
        yield server


@pytest.fixture
def stack_env() -> dict[str, str]:
    """More environment for the stack's worker: a test module overrides this fixture."""
    return {}


@pytest.fixture
def hub_env() -> dict[str, str]:
    """More environment for the stack's hub: a test module overrides this fixture."""
    return {}


@pytest.fixture
def stack(portal_server, settings, tmp_path, docker_client, sandbox_image, stack_env, hub_env):  # noqa: F811
    """The whole stack, wired together; yields the running hub. (A mark in a conftest applies to
    no test, so the PostgreSQL condition is checked here, where every e2e test passes.)"""
    if connection.vendor != "postgresql":
        pytest.skip("the worker shares the test database: PostgreSQL (make test runs it)")
    from tests.sandboxes.launcher.helpers import catalogue

    catalogue()  # seeded by a migration, but a committing test before this one flushed it
    secret = secrets.token_urlsafe(32)
    settings.HUB_SPAWN_SECRET = secret
    portal = portal_server.url
    hub_variables = {"HUB_SPAWN_SECRET": secret, **hub_env}
    with running_hub(portal_internal_url=portal, env=hub_variables) as hub:
        settings.HUB_API_URL = hub.api_url
        settings.HUB_API_TOKEN = hub.api_token
        settings.HUB_PUBLIC_URL = hub.public_url
        env = {
            "HUB_API_URL": hub.api_url,
            "HUB_API_TOKEN": hub.api_token,
            "HUB_PUBLIC_URL": hub.public_url,
            "HUB_SPAWN_SECRET": secret,
            **stack_env,
        }
        hub.worker_env = env
        eager = celery_app.conf.task_always_eager
        celery_app.conf.task_always_eager = False
        try:
            with celery_worker(env, tmp_path / "worker.log"):
                hub.worker_log = tmp_path / "worker.log"
                yield hub
        finally:
            # Whatever still waits in the queue must not start while the hub stops the running
            # servers on its way out (each stop frees a GPU and would advance the queue, and
            # the hub keeps servers across its restart): that leaked containers, two a run.
            from sandboxes.launcher.models import Sandbox

            Sandbox.objects.filter(status=Sandbox.Status.QUEUED).update(
                status=Sandbox.Status.STOPPED
            )
            celery_app.conf.task_always_eager = eager


def hub_sign_in_allowed(hub, settings) -> None:
    """Let a browser sign in to this throwaway hub through the portal: the hub's OIDC client is
    registered, and the portal's form-action policy names the hub's origin (its own port)."""
    from urllib.parse import urlsplit

    from portal.users.oidc import hub_client_ensure

    hub_client_ensure(
        client_id=hub.env["HUB_OIDC_CLIENT_ID"],
        client_secret=hub.env["HUB_OIDC_CLIENT_SECRET"],
        hub_public_url=hub.public_url,
    )
    configured = "{0.scheme}://{0.netloc}".format(urlsplit(settings.HUB_PUBLIC_URL))
    settings.CONTENT_SECURITY_POLICY = settings.CONTENT_SECURITY_POLICY.replace(
        f"form-action 'self' {configured}", f"form-action 'self' {hub.public_url}"
    )
