"""The real hub (jupyterhub_config.py + CHP + PortalSpawner + docker) against a stub portal."""

from __future__ import annotations

import time

import httpx

from tests.sandboxes.spawner.conftest import follow_progress
from tests.sandboxes.spawner.stub_portal import StubPortal, spec

SERVER = "sb-0123456789"


def _containers(docker_client, user: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"nac.user={user}"})


def _user_token(hub, user: str, **body) -> str:
    with hub.client() as api:
        response = api.post(f"/users/{user}/tokens", json={"expires_in": 600, **body})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def test_hub_starts_and_answers_through_the_proxy(hub):
    # given the hub of the fixture; then its API answers through CHP, and the service token works
    assert httpx.get(f"{hub.api_url}/").json()["version"].startswith("6.")
    with hub.client() as api:
        services = api.get("/services")
    assert services.status_code == 403  # the portal's role holds no list:services: least privilege
    with hub.client() as api:
        assert api.get("/users").status_code == 200


def test_the_portals_service_token_holds_only_what_the_hub_client_calls(hub, hub_user):
    # given the portal's service token, as the hub expands its role
    with hub.client() as api:
        scopes = set(api.get("/user").json()["scopes"])
        metrics = api.get(hub.api_url.removesuffix("/api") + "/metrics")
        proxy = api.get("/proxy")
        shutdown = api.post("/shutdown", json={})

    # then it holds what hub_client.py needs ...
    assert {"admin:users", "read:servers", "start:servers", "delete:servers", "tokens"} <= scopes
    # ... and nothing that reaches users' servers, the proxy, the hub's state or its metrics
    forbidden = {
        "access:servers", "admin:servers", "admin:server_state", "proxy", "shutdown",
        "read:metrics", "read:hub", "admin:groups", "admin:services", "shares", "read:roles",
    }  # fmt: skip
    assert scopes & forbidden == set()
    assert metrics.status_code == proxy.status_code == shutdown.status_code == 403


def test_a_user_cannot_start_a_server_with_their_own_token(
    hub, hub_user, stub_portal, docker_client
):
    # given a hub user holding a token with everything their role allows
    token = _user_token(hub, hub_user)
    headers = {"Authorization": f"token {token}"}
    path = f"{hub.api_url}/users/{hub_user}/servers/{SERVER}"
    stub_portal.answer(SERVER, (200, spec(user=hub_user, image="nac/python-cpu:2026.11")))

    # when they try to create or start a named server themselves, with or without options
    start = httpx.post(path, headers=headers, json={"user_options": {"image": "evil"}})
    create = httpx.put(path, headers=headers)
    default = httpx.post(f"{hub.api_url}/users/{hub_user}/server", headers=headers)

    # then the hub refuses (the role has no start:servers) and nothing reached the spawner
    assert start.status_code == create.status_code == default.status_code == 403
    assert "start:servers" in start.json()["message"]
    assert [c for c in stub_portal.calls if c.body.get("username") == hub_user] == []
    assert _containers(docker_client, hub_user) == []
    # and what they may do still works: read themselves
    me = httpx.get(f"{hub.api_url}/user", headers=headers)
    assert me.status_code == 200
    assert not any(s.startswith(("servers", "start:servers", "admin")) for s in me.json()["scopes"])


def test_the_portal_cannot_mint_a_user_token_beyond_the_users_role(hub, hub_user):
    with hub.client() as api:
        response = api.post(
            f"/users/{hub_user}/tokens",
            json={"scopes": [f"start:servers!user={hub_user}"], "expires_in": 60},
        )
    assert response.status_code == 400
    assert "Not assigning requested scopes" in response.json()["message"]


def test_a_refusal_from_the_portal_fails_the_spawn_with_the_portals_reason(
    hub, hub_user, stub_portal, docker_client
):
    # given the portal did not authorise this start
    reason = "The portal has not authorised a start of this sandbox (it is stopped)."
    server = "sb-refused0001"
    stub_portal.answer(server, (403, {"detail": reason}))

    # when the portal's service token asks the hub to start it anyway
    with hub.client() as api:
        started = api.post(f"/users/{hub_user}/servers/{server}", json={"user_options": {}})
    event = follow_progress(hub, hub_user, server)

    # then the spawn fails with exactly the portal's message, and no container was created
    assert started.status_code == 202
    assert event["failed"] is True
    assert event["message"] == f"Spawn failed: {reason}"
    calls = stub_portal.calls_for(StubPortal.SPAWN_SPEC, server)
    assert len(calls) == 1  # a 4xx is an answer, not retried
    assert calls[0].authorization == f"Bearer {stub_portal.secret}"
    assert calls[0].body == {"username": hub_user, "server_name": server}
    assert _containers(docker_client, hub_user) == []
    # and the portal heard that the server is not running
    assert stub_portal.wait_for(StubPortal.SERVER_STOPPED, server)
    with hub.client() as api:
        assert api.get(f"/users/{hub_user}/servers/{server}").json()["ready"] is False


def test_an_unreachable_portal_fails_the_spawn_after_retries(
    hub, hub_user, stub_portal, docker_client
):
    # given the portal answers 503 every time
    server = "sb-unavailable1"
    stub_portal.answer(server, (503, {"detail": "maintenance"}))

    with hub.client() as api:
        assert api.post(f"/users/{hub_user}/servers/{server}", json={}).status_code == 202
    event = follow_progress(hub, hub_user, server)

    assert event["failed"] is True
    assert "portal is unreachable" in event["message"]
    assert len(stub_portal.calls_for(StubPortal.SPAWN_SPEC, server)) == 3  # 1 + 2 retries
    assert _containers(docker_client, hub_user) == []


def test_a_gpu_spec_on_a_host_without_the_nvidia_runtime_fails_and_leaves_no_container(
    hub, hub_user, stub_portal, docker_client, sandbox_image
):
    server = "sb-gpu00000001"
    uuid = "GPU-8e4c1b4e-0a53-5b0e-9f3a-2f1d3c4b5a69"
    stub_portal.answer(server, (200, spec(user=hub_user, image=sandbox_image, gpu_uuids=[uuid])))

    with hub.client() as api:
        assert api.post(f"/users/{hub_user}/servers/{server}", json={}).status_code == 202
    event = follow_progress(hub, hub_user, server)

    assert event["failed"] is True
    assert "nvidia" in event["message"].lower() or "device" in event["message"].lower()
    assert _containers(docker_client, hub_user) == []


def test_a_cpu_sandbox_starts_as_specified_and_an_access_token_reaches_only_it(
    hub, hub_user, stub_portal, docker_client, sandbox_image
):
    # given the portal authorised a CPU sandbox on the internal network
    server = "sb-cpu00000001"
    answer = spec(user=hub_user, image=sandbox_image, egress="internal", cpu_limit=1.0)
    stub_portal.answer(server, (200, answer))

    # when the portal starts it, sending options that must have no effect
    began = time.monotonic()
    with hub.client() as api:
        response = api.post(
            f"/users/{hub_user}/servers/{server}",
            json={"user_options": {"image": "nac/base:bookworm", "gpus": "all"}},
        )
    event = follow_progress(hub, hub_user, server)
    spawn_seconds = time.monotonic() - began
    print(f"spawn {spawn_seconds:.1f} s; hub start {hub.started_seconds:.1f} s")  # noqa: T201

    # then it is ready, built from the spec and nothing else
    assert response.status_code == 202
    assert event.get("ready") is True, event
    [container] = _containers(docker_client, hub_user)
    container.reload()
    host = container.attrs["HostConfig"]
    config = container.attrs["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["Image"] == sandbox_image
    assert config["User"] == "1000:100"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["NAC_SANDBOX_ID"] == answer["sandbox"]
    assert host["DeviceRequests"] in (None, [])
    assert host["CapDrop"] == ["ALL"]
    assert host["CpuQuota"] == 100_000  # 1.0 CPU of a 100 ms period
    assert host["Memory"] == answer["mem_limit_bytes"]
    assert host["PidsLimit"] == answer["pids_limit"]
    assert list(container.attrs["NetworkSettings"]["Networks"]) == ["nac-sandboxes-internal"]
    assert config["Labels"]["nac.sandbox"] == answer["sandbox"]

    # and a token minted the way the portal mints access tokens reaches this server ...
    token = _user_token(
        hub, hub_user, scopes=[f"access:servers!server={hub_user}/{server}"], expires_in=300
    )
    headers = {"Authorization": f"token {token}"}
    server_api = f"{hub.server_url(hub_user, server)}api/status"
    assert httpx.get(server_api, headers=headers, timeout=30).status_code == 200
    # ... but nothing else: not the hub's server controls, not another user's data
    assert (
        httpx.delete(
            f"{hub.api_url}/users/{hub_user}/servers/{server}", headers=headers
        ).status_code
        == 403
    )
    assert httpx.get(f"{hub.api_url}/users", headers=headers).status_code == 403
    # a token without the scope is turned away by the server
    other = _user_token(hub, hub_user, scopes=[f"read:users!user={hub_user}"], expires_in=300)
    denied = httpx.get(server_api, headers={"Authorization": f"token {other}"}, timeout=30)
    assert denied.status_code == 403

    # when the portal stops it
    with hub.client() as api:
        stopped = api.request(
            "DELETE", f"/users/{hub_user}/servers/{server}", json={"remove": True}
        )
        deadline = time.monotonic() + 30
        while api.get(f"/users/{hub_user}/servers/{server}").status_code != 404:
            assert time.monotonic() < deadline, "the server was not removed"
            time.sleep(0.3)

    # then the container is gone and the portal was told
    assert stopped.status_code in (202, 204)
    assert stub_portal.wait_for(StubPortal.SERVER_STOPPED, server)
    deadline = time.monotonic() + 15
    while _containers(docker_client, hub_user):
        assert time.monotonic() < deadline, "the container was not removed"
        time.sleep(0.3)


def test_the_idle_culler_runs_with_its_own_least_privilege_role(hub):
    # the hub starts the culler as a managed service; it lists users at once, with its token
    deadline = time.monotonic() + 30
    while "GET /hub/api/users?state=[secret] (idle-culler@" not in hub.log():
        assert time.monotonic() < deadline, hub.log()[-3000:]
        time.sleep(0.3)
    log = hub.log()
    assert "Service idle-culler exited" not in log
    assert "error: argument" not in log
    with hub.client() as api:
        culler = api.get("/services/idle-culler")
    assert culler.status_code == 403  # the portal may not even look at it
