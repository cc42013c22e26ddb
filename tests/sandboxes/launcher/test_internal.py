"""The hub's internal API as an attacker meets it: it answers only the hub's addresses, a
hostile bearer is a 401, and a late `server-stopped` about an earlier start cannot stop (and
stop the charging of) a sandbox that was started again under the same server name."""

import pytest
from django.test import TestCase

from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import services
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.models import SandboxRun

from .helpers import committed, funded_founder, gpus, image, profile

pytestmark = pytest.mark.django_db
SECRET = "test-spawn-secret-0123456789abcdef"  # portal/settings/test.py


def internal(client, path, body, *, secret=SECRET, remote_addr="127.0.0.1", **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(
            f"/internal/hub/{path}/",
            body,
            content_type="application/json",
            REMOTE_ADDR=remote_addr,
            **headers,
            **extra,
        )


def running_sandbox(founder) -> Sandbox:
    sandbox = committed(
        services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
    )
    committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
    sandbox.refresh_from_db()
    return sandbox


def holds_its_gpu(sandbox) -> bool:
    return GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True).exists()


# --- Only the hub's addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote_addr", "extra"),
    [
        ("10.1.2.3", {}),
        ("172.30.0.5", {}),  # a sandbox on the hub's network: not the hub
        ("203.0.113.9", {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}),  # a forwarded header is no proof
        ("203.0.113.9", {"HTTP_X_REAL_IP": "172.30.0.1"}),
    ],
)
def test_the_internal_api_is_a_404_to_anyone_but_the_hub(client, remote_addr, extra, enqueued):
    # given a running sandbox
    gpus(1)
    founder = funded_founder()
    sandbox = running_sandbox(founder)
    body = {"username": founder.hub_username, "server_name": sandbox.server_name}

    # when someone else, even with the hub's secret, asks for a spec or reports it stopped
    spec = internal(client, "spawn-spec", body, remote_addr=remote_addr, **extra)
    stopped = internal(client, "server-stopped", body, remote_addr=remote_addr, **extra)

    # then both are 404s and the sandbox runs on
    assert (spec.status_code, stopped.status_code) == (404, 404)
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING
    assert holds_its_gpu(sandbox)


@pytest.mark.parametrize("remote_addr", ["127.0.0.1", "::1", "172.30.0.1"])
def test_the_hubs_default_addresses_are_served(client, remote_addr, enqueued):
    founder = funded_founder()
    sandbox = committed(
        services.sandbox_launch, user=founder, image=image(), profile=profile("cpu-small")
    )
    body = {"username": founder.hub_username, "server_name": sandbox.server_name}
    assert internal(client, "spawn-spec", body, remote_addr=remote_addr).status_code == 200


def test_the_allowed_addresses_are_a_setting(client, settings, enqueued):
    settings.HUB_INTERNAL_ALLOWED_IPS = ["192.0.2.0/28"]
    founder = funded_founder()
    sandbox = committed(
        services.sandbox_launch, user=founder, image=image(), profile=profile("cpu-small")
    )
    body = {"username": founder.hub_username, "server_name": sandbox.server_name}
    assert internal(client, "spawn-spec", body, remote_addr="192.0.2.7").status_code == 200
    assert internal(client, "spawn-spec", body, remote_addr="127.0.0.1").status_code == 404


def test_a_non_ascii_bearer_is_a_401_not_a_500(client):
    body = {"username": "someone", "server_name": "sb-0000000000"}
    for path in ("spawn-spec", "server-stopped"):
        assert internal(client, path, body, secret="sécret-ü").status_code == 401


# --- A late server-stopped -------------------------------------------------------------------


def test_a_late_server_stopped_for_an_earlier_start_cannot_stop_the_restarted_sandbox(
    client, enqueued
):
    # given a GPU sandbox started (spec A), stopped by the hub (with A's start id), restarted
    gpus(1)
    founder = funded_founder()
    sandbox = committed(
        services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
    )
    body = {"username": founder.hub_username, "server_name": sandbox.server_name}
    first = internal(client, "spawn-spec", body).json()["start"]
    committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
    assert internal(client, "server-stopped", {**body, "start": first}).status_code == 204
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.STOPPED
    committed(services.sandbox_restart, sandbox=sandbox, acting_user=founder)
    second = internal(client, "spawn-spec", body).json()["start"]
    committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
    assert second
    assert second != first

    # when the first start's server-stopped arrives again, late (a retry, a slow hub)
    late = internal(client, "server-stopped", {**body, "start": first})

    # then it is ignored: the restarted sandbox runs on, holds its GPU, and is still charged
    assert late.status_code == 204
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING
    assert holds_its_gpu(sandbox)
    assert SandboxRun.objects.filter(sandbox=sandbox, ended_at__isnull=True).exists()

    # and the report about the current start does stop it
    assert internal(client, "server-stopped", {**body, "start": second}).status_code == 204
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.STOPPED
    assert not holds_its_gpu(sandbox)


@pytest.mark.parametrize("start", [123, ["x"], "x" * 65])
def test_a_malformed_start_id_is_a_400(client, start, enqueued):
    gpus(1)
    founder = funded_founder()
    sandbox = running_sandbox(founder)
    body = {"username": founder.hub_username, "server_name": sandbox.server_name, "start": start}
    assert internal(client, "server-stopped", body).status_code == 400
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING
