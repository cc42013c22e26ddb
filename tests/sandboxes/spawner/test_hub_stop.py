"""A stopped hub leaves nothing behind: JupyterHub starts configurable-http-proxy and its managed
services (the idle culler) each in a session of its own, so they outlive a hub that is not
stopped with care. The test hub (tests/sandboxes/hub.py) must end them with it, whether the hub
stops cleanly or has died."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.sandboxes.hub import hub_processes, running_hub, still_running


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _running_hub_processes(hub, timeout: float = 30) -> dict[int, int]:
    """The hub's processes once its proxy and its idle culler are both up."""
    deadline = time.monotonic() + timeout
    while True:
        processes = hub_processes(hub)
        commands = " ".join(_command(pid) for pid in processes)
        if "configurable-http-proxy" in commands and "jupyterhub_idle_culler" in commands:
            return processes
        if time.monotonic() > deadline:
            raise AssertionError(f"the hub's proxy and culler did not start: {commands}")
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["stopped", "died"])
def test_a_stopped_hub_leaves_no_process_behind(stub_portal, docker_client, how):
    with running_hub(
        portal_internal_url=stub_portal.url, env={"HUB_SPAWN_SECRET": stub_portal.secret}
    ) as hub:
        # given the hub, its proxy and its idle culler, running
        processes = _running_hub_processes(hub)
        assert hub.pid in processes
        assert len(processes) >= 3
        if how == "died":
            # a hub killed outright runs no cleanup: its proxy and culler are left to init
            os.kill(hub.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while still_running(hub.pid, processes[hub.pid]) and time.monotonic() < deadline:
                time.sleep(0.1)

    # when the fixture has stopped it, then nothing of it runs any more
    left = {pid: _command(pid) for pid, started in processes.items() if still_running(pid, started)}
    assert left == {}
    assert hub_processes(hub) == {}
