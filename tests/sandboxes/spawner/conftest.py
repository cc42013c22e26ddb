"""Fixtures for the hub-side tests: docker, the sandbox image, a stub portal and a real hub."""

from __future__ import annotations

import contextlib
import json
import secrets
import time

import docker
import docker.errors
import httpx
import pytest

from tests.sandboxes.hub import RunningHub, running_hub
from tests.sandboxes.spawner.stub_portal import StubPortal

SANDBOX_IMAGE = "nac/python-cpu:2026.11"


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"these tests need a running docker engine (.ci/system-deps.sh): {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client) -> str:
    try:
        docker_client.images.get(SANDBOX_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{SANDBOX_IMAGE} is missing: build it with sandboxes/images/build.sh")
    return SANDBOX_IMAGE


@pytest.fixture(scope="module")
def stub_portal():
    with StubPortal() as portal:
        yield portal


@pytest.fixture(scope="module")
def hub(stub_portal, docker_client) -> RunningHub:
    with running_hub(
        portal_internal_url=stub_portal.url, env={"HUB_SPAWN_SECRET": stub_portal.secret}
    ) as running:
        yield running


def remove_user_containers(client, user: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"nac.user={user}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.volumes.get(f"nac-home-{user}").remove(force=True)


@pytest.fixture
def hub_user(hub, docker_client) -> str:
    """A fresh hub user, created as the portal creates them (service token, admin:users)."""
    name = f"t{secrets.token_hex(5)}"
    with hub.client() as api:
        assert api.post(f"/users/{name}").status_code == 201
    yield name
    with hub.client() as api:
        user = api.get(f"/users/{name}").json()
        for server in user.get("servers") or {}:
            api.request("DELETE", f"/users/{name}/servers/{server}", json={"remove": True})
        deadline = time.monotonic() + 30
        while api.get(f"/users/{name}").json().get("servers") and time.monotonic() < deadline:
            time.sleep(0.3)
        api.delete(f"/users/{name}")
    remove_user_containers(docker_client, name)


def follow_progress(hub: RunningHub, user: str, server: str, timeout: float = 150) -> dict:
    """The last progress event of a spawn (ready or failed).

    A spawn that fails fast can be caught while the hub cleans it up: the progress API then
    answers 400 "not starting" for a moment, and the failure once the cleanup is done."""
    deadline = time.monotonic() + timeout
    with hub.client() as api:
        while True:
            with api.stream(
                "GET",
                f"/users/{user}/servers/{server}/progress",
                timeout=httpx.Timeout(10, read=timeout),
            ) as response:
                if response.status_code == 400 and time.monotonic() < deadline:
                    response.read()
                    time.sleep(0.2)
                    continue
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event.get("ready") or event.get("failed"):
                            return event
            raise AssertionError("the progress stream ended without ready or failed")
