"""The start id round trip with the real hub and spawner: the portal names the start in the spawn
spec, the spawner keeps it and sends it back with `server-stopped`, and the portal believes a
report about the current start (a late one about an earlier start it ignores: see
tests/sandboxes/launcher/test_internal.py)."""

from __future__ import annotations

import pytest

from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import services
from sandboxes.launcher.hub_client import hub_client
from sandboxes.launcher.models import SandboxStart
from sandboxes.metering.models import SandboxRun
from tests.sandboxes.launcher.helpers import funded_founder, gpus
from tests.sandboxes.launcher.test_api import client_for

from .test_reconcile import launch_running
from .test_sandbox_lifecycle import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_server_stopped_in_the_hub_is_released_by_the_report_of_its_start(stack, monkeypatch):
    # given a GPU sandbox started by the real spawner, charged since its start
    gpus(1)
    client = client_for(funded_founder())
    sandbox = launch_running(stack, client)
    start = SandboxStart.objects.get(sandbox=sandbox, ended_at__isnull=True)
    assert SandboxRun.objects.get(sandbox=sandbox).started_at == sandbox.starting_at

    reports = []  # what the portal (in this process, under uvicorn) is told
    real = services.sandbox_server_gone

    def spy(**kwargs):
        reports.append(kwargs["start_id"])
        return real(**kwargs)

    monkeypatch.setattr(services, "sandbox_server_gone", spy)

    # when the hub stops the server by itself (as the idle culler does), not the portal
    with hub_client() as hub:
        hub.server_stop(sandbox.user.hub_username, sandbox.server_name, remove=True)

    # then the spawner's report of that start releases it: stopped, GPU free, run ended
    stopped = wait_for(client, str(sandbox.public_id), {"stopped"}, stack, timeout=60)
    assert stopped["message"] == "The notebook server stopped."
    assert reports == [str(start.public_id)]
    start.refresh_from_db()
    assert start.outcome == SandboxStart.Outcome.STOPPED
    assert not GpuAllocation.objects.filter(released_at__isnull=True).exists()
    assert not SandboxRun.objects.filter(sandbox=sandbox, ended_at__isnull=True).exists()
