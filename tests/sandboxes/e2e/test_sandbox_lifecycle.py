"""Launch through the API → running → run code over the kernel websocket with the sandbox's
access token → stop → container gone, nothing allocated. All real."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher.models import Sandbox
from tests.sandboxes.launcher.helpers import funded_founder, funded_student, gpus
from tests.sandboxes.launcher.test_api import client_for

pytestmark = pytest.mark.django_db(transaction=True)
API = "/api/v1"


def wait_for(client, sandbox_id: str, statuses: set[str], hub, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        body = client.get(f"{API}/sandboxes/{sandbox_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.25)
    raise AssertionError(
        f"sandbox stayed {body.get('status')}: {body.get('message')}\n--- hub ---\n"
        f"{hub.log()[-3000:]}\n--- worker ---\n{hub.worker_log.read_text()[-3000:]}"
    )


def execute(server_url: str, token: str, code: str) -> str:
    """Run `code` in a new kernel through the hub's proxy; return its text/plain result."""
    headers = {"Authorization": f"token {token}"}
    kernel = httpx.post(f"{server_url}api/kernels", headers=headers, json={}, timeout=30)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    ws_url = server_url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False},
        "channel": "shell",
    }
    with connect(ws_url, additional_headers=headers, open_timeout=30) as ws:
        ws.send(json.dumps(request))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=60))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "execute_result":
                return message["content"]["data"]["text/plain"]
            if message["msg_type"] == "error":
                raise AssertionError(message["content"])
    raise AssertionError("no execute_result")


def test_launch_run_code_and_stop(stack, docker_client):
    client = client_for(funded_student())
    launched = client.post(
        f"{API}/sandboxes", {"image": "python-cpu", "profile": "cpu-small"}, format="json"
    )
    assert launched.status_code == 202, launched.json()
    sandbox_id = launched.json()["id"]

    running = wait_for(client, sandbox_id, {"running", "failed"}, stack)
    assert running["status"] == "running", running["message"]
    # on the person's own host below the hub's, not on the hub's (or the portal's) origin
    hub_username = Sandbox.objects.get(public_id=sandbox_id).user.hub_username
    assert running["url"].startswith(stack.user_origin(hub_username) + "/user/")
    assert urlsplit(running["url"]).hostname == f"{hub_username}.hub.localhost"
    containers = docker_client.containers.list(filters={"label": f"nac.sandbox={sandbox_id}"})
    assert len(containers) == 1

    access = client.post(f"{API}/sandboxes/{sandbox_id}/access-token")
    assert access.status_code == 201, access.json()
    token = access.json()["token"]
    assert execute(access.json()["server_url"], token, "6*7") == "42"
    # The token reaches that server only: not the hub API as a user, not another server.
    assert (
        httpx.get(f"{stack.api_url}/users", headers={"Authorization": f"token {token}"}).status_code
        == 403
    )

    stopping = client.post(f"{API}/sandboxes/{sandbox_id}/stop")
    assert stopping.status_code == 202
    stopped = wait_for(client, sandbox_id, {"stopped"}, stack, timeout=60)
    assert stopped["status"] == "stopped"
    # whoever reported it first (the stop task or the spawner's post-stop hook), it says so
    assert stopped["message"] in {"Stopped.", "The notebook server stopped."}
    assert (
        docker_client.containers.list(all=True, filters={"label": f"nac.sandbox={sandbox_id}"})
        == []
    )
    assert not GpuAllocation.objects.filter(released_at__isnull=True).exists()


def test_gpus_two_run_three_queue_and_a_stop_starts_the_first_in_line(stack):
    gpus(2)
    clients = [client_for(funded_founder()) for _ in range(5)]
    ids = []
    for client in clients:  # in order, so the queue order is known
        response = client.post(
            f"{API}/sandboxes", {"image": "python-cpu", "profile": "gpu-1"}, format="json"
        )
        assert response.status_code == 202, response.json()
        ids.append(response.json()["id"])
    first, second = (
        wait_for(c, i, {"running", "failed"}, stack)
        for c, i in zip(clients[:2], ids[:2], strict=True)
    )
    assert first["status"] == second["status"] == "running"
    assert len(set(first["gpus"] + second["gpus"])) == 2
    queued = [
        c.get(f"{API}/sandboxes/{i}").json() for c, i in zip(clients[2:], ids[2:], strict=True)
    ]
    assert [q["status"] for q in queued] == ["queued"] * 3
    assert [q["queue_position"] for q in queued] == [1, 2, 3]

    clients[0].post(f"{API}/sandboxes/{ids[0]}/stop")
    third = wait_for(clients[2], ids[2], {"running", "failed"}, stack)
    assert third["status"] == "running"
    assert third["gpus"] == first["gpus"]  # the freed device
    rest = [c.get(f"{API}/sandboxes/{i}").json() for c, i in zip(clients[3:], ids[3:], strict=True)]
    assert [r["queue_position"] for r in rest] == [1, 2]
    assert Sandbox.objects.filter(status="queued").count() == 2
