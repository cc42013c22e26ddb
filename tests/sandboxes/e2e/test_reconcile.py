"""Reconciliation against the real hub and Docker: what happened behind the portal's back is
repaired, released and audited."""

from __future__ import annotations

import time

import pytest

from portal.audit.models import AuditEvent
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.reconcile import reconcile
from tests.sandboxes.launcher.helpers import funded_founder, gpus
from tests.sandboxes.launcher.test_api import client_for

from .test_sandbox_lifecycle import API, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def launch_running(stack, client) -> Sandbox:
    response = client.post(
        f"{API}/sandboxes", {"image": "python-cpu", "profile": "gpu-1"}, format="json"
    )
    assert response.status_code == 202, response.json()
    assert wait_for(client, response.json()["id"], {"running", "failed"}, stack)["status"] == (
        "running"
    )
    return Sandbox.objects.get(public_id=response.json()["id"])


def test_a_container_removed_by_hand_is_stopped_released_and_audited(stack, docker_client):
    gpus(1)
    client = client_for(funded_founder())
    sandbox = launch_running(stack, client)
    (container,) = docker_client.containers.list(
        filters={"label": f"nac.sandbox={sandbox.public_id}"}
    )
    container.remove(force=True)  # `docker rm -f`, behind everybody's back

    repairs = reconcile()

    sandbox.refresh_from_db()
    assert repairs["stopped"] == 1
    assert sandbox.status == "stopped"
    assert not GpuAllocation.objects.filter(released_at__isnull=True).exists()
    event = AuditEvent.objects.get(action="sandbox.reconciled")
    assert event.target_id == str(sandbox.public_id)
    assert event.data["was"] == "running"
    # A second pass finds nothing left to repair.
    assert reconcile() == {"stopped": 0, "failed": 0, "orphans_stopped": 0}


def test_a_server_the_portal_does_not_count_as_live_is_stopped_in_the_hub(stack, docker_client):
    gpus(1)
    client = client_for(funded_founder())
    sandbox = launch_running(stack, client)
    # The portal's record says stopped (say, a worker died between the hub and the database),
    # but the hub still runs the server: nobody would pay for it.
    Sandbox.objects.filter(pk=sandbox.pk).update(status="stopped")

    repairs = reconcile()

    assert repairs["orphans_stopped"] == 1
    assert AuditEvent.objects.filter(action="sandbox.reconciled_orphan").count() == 1
    deadline = time.monotonic() + 30
    label = f"nac.sandbox={sandbox.public_id}"
    while docker_client.containers.list(all=True, filters={"label": label}):
        assert time.monotonic() < deadline, "the orphan's container is still there"
        time.sleep(0.25)
