"""The portal's hub client against the real hub (jupyterhub_config.py, PortalSpawner, docker) and
a stub portal: what a launch asks of the hub, round trip by round trip."""

from __future__ import annotations

import secrets
import time

import pytest

from sandboxes.launcher.hub_client import HubClient
from tests.sandboxes.spawner.conftest import (  # noqa: F401 - fixtures
    docker_client,
    hub,
    remove_user_containers,
    sandbox_image,
    stub_portal,
)
from tests.sandboxes.spawner.stub_portal import spec


@pytest.fixture
def client(hub):  # noqa: F811
    with HubClient(api_url=hub.api_url, token=hub.api_token, retries=0) as api:
        yield api


@pytest.fixture
def new_person(hub, client, docker_client):  # noqa: F811
    """A hub username the hub has never seen; whatever it gets is removed afterwards."""
    name = f"t{secrets.token_hex(5)}"
    yield name
    for server in client.user_servers(name):
        client.server_stop(name, server, remove=True)
    deadline = time.monotonic() + 30
    while client.user_servers(name) and time.monotonic() < deadline:
        time.sleep(0.3)
    client.user_delete(name)
    remove_user_containers(docker_client, name)


def _ready(client: HubClient, user: str, server: str) -> bool:
    events = list(client.server_progress(user, server, timeout=120))
    return events[-1].ready


def _gone(client: HubClient, user: str, server: str) -> bool:
    deadline = time.monotonic() + 30
    while client.server_get(user, server) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _requests(hub, method: str, path: str) -> list[str]:  # noqa: F811
    """The hub's access-log lines of `method path` by the portal's service, oldest first."""
    marker = f" {method} /hub/api{path} (portal@"
    return [line for line in hub.log().splitlines() if marker in line]


def test_a_launch_creates_the_hub_user_only_when_the_hub_does_not_know_them(
    hub,  # noqa: F811
    stub_portal,  # noqa: F811
    client,
    new_person,
    sandbox_image,  # noqa: F811
):
    # given the portal authorised a server for someone the hub has never seen
    server = "sb-hubclient01"
    stub_portal.answer(server, (200, spec(user=new_person, image=sandbox_image)))

    # when the portal starts it, then stops it and starts it again
    assert client.server_start(new_person, server) is False  # pending: the spawn goes on
    assert _ready(client, new_person, server)
    assert client.server_stop(new_person, server, remove=True) or _gone(client, new_person, server)
    assert client.server_start(new_person, server) is False
    assert _ready(client, new_person, server)

    # then the hub user was created once, on the first start's 404: a start for someone the hub
    # knows is one request, with nothing asked before it
    created = _requests(hub, "POST", f"/users/{new_person}")
    starts = _requests(hub, "POST", f"/users/{new_person}/servers/{server}")
    assert [line.split("]", 1)[1].split()[0] for line in created] == ["201"]
    assert [line.split("]", 1)[1].split()[0] for line in starts] == ["404", "202", "202"]
