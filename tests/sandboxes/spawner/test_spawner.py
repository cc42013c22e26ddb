"""PortalSpawner in-process: what reaches docker for a GPU spec, spec validation, portal retries."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.spawner import SpawnException

from sandboxes.spawner.spawner import (
    PortalSpawner,
    SpawnSpec,
    _background,
    storage_size_supported,
)
from tests.sandboxes.hub import free_port
from tests.sandboxes.spawner.conftest import remove_user_containers
from tests.sandboxes.spawner.stub_portal import StubPortal, spec

GPU_A = "GPU-5d0f8a3e-1c2b-5e6f-8a9b-0c1d2e3f4a5b"
GPU_B = "GPU-9a8b7c6d-5e4f-5a3b-9c1d-0e1f2a3b4c5d"


class CreateOnlySpawner(PortalSpawner):
    """Runs all of start() but `docker start` and the wait for the server: a GPU container
    cannot start without the NVIDIA runtime, and docker removes an auto-remove container whose
    start failed."""

    async def start_object(self):
        pass

    async def wait_answering(self, ip, port):
        pass


def make_spawner(
    portal: StubPortal,
    *,
    user: str,
    server: str,
    cls: type[PortalSpawner] = PortalSpawner,
    with_server: bool = False,
) -> PortalSpawner:
    """A PortalSpawner as the hub builds one, minus the database; `with_server`: as start()
    finds it, with the server's record (its URL prefix) made."""
    record = None
    if with_server:
        prefix = f"/user/{user}/{server}/"
        record = orm.Server(proto="http", ip="", port=0, base_url=prefix, cookie_name="")
    return cls(
        user=SimpleNamespace(name=user, escaped_name=user, url=f"/user/{user}/"),
        orm_spawner=SimpleNamespace(name=server, server=record, display_name=server, state=None),
        hub=Hub(ip="172.30.0.1", port=8081),
        api_token="not-a-real-token",
        oauth_client_id=f"jupyterhub-user-{user}-{server}",
        portal_internal_url=portal.url,
        spawn_secret=portal.secret,
    )


@pytest.fixture
def portal():
    with StubPortal() as stub:
        yield stub


@pytest.fixture
def user_name(docker_client):
    name = "tgpu-user"
    remove_user_containers(docker_client, name)
    yield name
    remove_user_containers(docker_client, name)


def test_a_gpu_spec_creates_exactly_the_specified_container(
    portal, docker_client, sandbox_image, user_name
):
    # given the portal allocated two GPUs for a python-cpu sandbox with open egress
    server = "sb-gpuspec0001"
    answer = spec(
        user=user_name,
        image=sandbox_image,
        gpu_uuids=[GPU_A, GPU_B],
        cpu_limit=2.5,
        mem_limit_bytes=3 << 30,
        shm_size_bytes=1 << 30,
        pids_limit=777,
    )
    portal.answer(server, (200, answer))
    spawner = make_spawner(portal, user=user_name, server=server, cls=CreateOnlySpawner)
    # and whatever the browser posted, including another image and "all" GPUs
    spawner.user_options = {"image": "nac/base:bookworm", "gpu_ids": ["all"], "cpu_limit": 64}

    # when the hub starts it (as user.spawn does: apply the user options, then start)
    async def start():
        await spawner._run_apply_user_options(spawner.user_options)
        await spawner.start()

    asyncio.run(start())

    # then the container is exactly the spec
    [container] = docker_client.containers.list(
        all=True, filters={"label": f"nac.sandbox={answer['sandbox']}"}
    )
    attrs = container.attrs
    host, config = attrs["HostConfig"], attrs["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["Image"] == sandbox_image
    assert host["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": [GPU_A, GPU_B],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{GPU_A},{GPU_B}"
    assert "all" not in env["NVIDIA_VISIBLE_DEVICES"]
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] in (None, [])
    assert host["Privileged"] is False
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 777
    assert host["Memory"] == 3 << 30
    assert host["MemorySwap"] == 3 << 30
    assert host["ShmSize"] == 1 << 30
    assert host["CpuPeriod"] == 100_000
    assert host["CpuQuota"] == 250_000
    assert host["AutoRemove"] is True
    assert host["NetworkMode"] == "nac-sandboxes"
    assert host["Binds"] in (None, [])
    assert host["PortBindings"] in (None, {})  # nothing published on the host
    assert config["User"] == "1000:100"
    [mount] = attrs["Mounts"]
    assert (mount["Type"], mount["Name"], mount["Destination"]) == (
        "volume",
        f"nac-home-{user_name}",
        "/home/jovyan",
    )
    assert config["Labels"]["nac.gpus"] == f"{GPU_A},{GPU_B}"
    assert config["Labels"]["nac.server"] == server
    assert env["JUPYTERHUB_API_URL"].startswith("http://172.30.0.1:8081/")
    # and the browser's options were dropped before anything used them
    assert spawner.user_options == {}


def test_the_portal_is_retried_on_5xx_and_then_believed(portal):
    server = "sb-flaky000001"
    answer = spec(user="alice", image="nac/python-cpu:2026.11")
    portal.answer(server, (502, {}), (503, {}), (200, answer))
    spawner = make_spawner(portal, user="alice", server=server)

    result = asyncio.run(spawner.fetch_spawn_spec())

    assert result.sandbox == answer["sandbox"]
    assert len(portal.calls_for(StubPortal.SPAWN_SPEC, server)) == 3


def test_a_wrong_secret_is_a_refusal_not_a_retry(portal):
    server = "sb-secret00001"
    portal.answer(server, (200, spec(user="alice", image="nac/python-cpu:2026.11")))
    spawner = make_spawner(portal, user="alice", server=server)
    spawner.spawn_secret = "wrong"

    with pytest.raises(SpawnException) as refused:
        asyncio.run(spawner.fetch_spawn_spec())

    assert refused.value.jupyterhub_message.startswith("The hub is not authorised at the portal")
    assert len(portal.calls_for(StubPortal.SPAWN_SPEC, server)) == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"version": 2}, "version"),
        ({"volume": "/etc"}, "volume"),
        ({"volume": "../x"}, "volume"),
        ({"gpu_uuids": ["all"]}, "gpu_uuids"),
        ({"gpu_uuids": ["0"]}, "gpu_uuids"),
        ({"gpu_uuids": [GPU_A, GPU_A]}, "duplicates"),
        ({"egress": "host"}, "egress"),
        ({"cpu_limit": 0}, "cpu_limit"),
        ({"mem_limit_bytes": True}, "mem_limit_bytes"),
        ({"pids_limit": 1.5}, "pids_limit"),
        ({"environment": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "NVIDIA_VISIBLE_DEVICES"),
        ({"environment": {"JUPYTERHUB_API_TOKEN": "x"}}, "JUPYTERHUB_API_TOKEN"),
        ({"environment": {"CUDA_VISIBLE_DEVICES": "0"}}, "CUDA_VISIBLE_DEVICES"),
        ({"labels": {"nac.user": "{username}"}}, "labels"),
        ({"image": ""}, "image"),
        ({"disk_bytes": -1}, "disk_bytes"),
        ({"disk_bytes": "20G"}, "disk_bytes"),
        ({"disk_bytes": 1.5}, "disk_bytes"),
    ],
)
def test_a_malformed_spec_is_rejected(change, error):
    data = {**spec(user="alice", image="nac/python-cpu:2026.11"), **change}
    with pytest.raises(ValueError, match=error):
        SpawnSpec.from_json(data)


def test_a_spec_from_the_contract_is_accepted():
    parsed = SpawnSpec.from_json(
        spec(user="alice", image="nac/python-cpu:2026.11", egress="internal")
    )
    assert parsed.egress == "internal"
    assert parsed.gpu_uuids == ()
    assert parsed.volume == "nac-home-alice"


def test_server_stopped_carries_the_start_id_of_the_spec_even_after_a_hub_restart(portal):
    # given a spawner that fetched a spec for start A and created its container
    server = "sb-startid0001"
    start = "5e1c0a2b-3d4e-4f50-8a6b-7c8d9e0f1a2b"
    answer = {**spec(user="alice", image="nac/python-cpu:2026.11"), "start": start}
    portal.answer(server, (200, answer))
    spawner = make_spawner(portal, user="alice", server=server)
    spawner.apply_spawn_spec(asyncio.run(spawner.fetch_spawn_spec()))
    spawner.object_id = "0123456789ab"
    # and the hub restarted since: a new spawner object, loaded from the stored state
    restored = make_spawner(portal, user="alice", server=server)
    restored.load_state(spawner.get_state())

    # when the server stops as the hub stops it: DockerSpawner.stop removes the container and
    # clears the state, then the hub runs the post-stop hook, then clears the state again
    async def stop():
        restored.object_id = ""
        restored.clear_state()
        await restored.run_post_stop_hook()
        restored.clear_state()
        await asyncio.sleep(0)
        await asyncio.gather(*list(_background))

    asyncio.run(stop())

    # then the portal is told which start ended, and nothing keeps that start any more
    [call] = portal.calls_for(StubPortal.SERVER_STOPPED, server)
    assert call.body == {"username": "alice", "server_name": server, "start": start}
    assert restored.portal_start == ""
    assert "nac_start" not in restored.get_state()


@pytest.mark.parametrize("start", [7, "not a start id!", "x" * 65])
def test_a_malformed_start_id_is_rejected(start):
    with pytest.raises(ValueError, match="start"):
        SpawnSpec.from_json({**spec(user="alice", image="nac/python-cpu:2026.11"), "start": start})


def _info(driver: str, backing: str | None = None) -> dict:
    status = [["Backing Filesystem", backing]] if backing else []
    return {"Driver": driver, "DriverStatus": [*status, ["Supports d_type", "true"]]}


@pytest.mark.parametrize(
    ("info", "supported"),
    [
        (_info("overlay2", "extfs"), False),  # this kind of machine: ext4 under overlay2
        (_info("overlay2", "xfs"), True),
        (_info("btrfs"), True),
        (_info("zfs"), True),
        (_info("vfs"), False),
        (_info("fuse-overlayfs"), False),
    ],
)
def test_the_writable_layer_is_limited_only_where_the_storage_driver_can(info, supported):
    assert storage_size_supported(info) is supported


def test_the_engine_here_is_read_as_docker_info_reports_it(docker_client):
    # the real engine's answer parses: a driver name, and a verdict that matches it
    info = docker_client.info()
    assert info["Driver"]
    assert storage_size_supported(info) is (
        info["Driver"] in ("btrfs", "zfs", "devicemapper")
        or dict(info.get("DriverStatus") or []).get("Backing Filesystem") == "xfs"
    )


@pytest.mark.parametrize("limit", [True, False])
def test_the_spec_disk_size_reaches_docker_when_the_engine_can_enforce_it(
    portal, monkeypatch, limit
):
    # given an engine that can (or cannot) cap a writable layer, and a spec asking for 20 GiB
    monkeypatch.setattr(PortalSpawner, "writable_layer_limit", limit)
    spawner = make_spawner(portal, user="alice", server="sb-disk000001")
    data = {**spec(user="alice", image="nac/python-cpu:2026.11"), "disk_bytes": 20 << 30}

    spawner.apply_spawn_spec(SpawnSpec.from_json(data))

    # then docker is asked for that size exactly where it can enforce it, and nowhere else
    expected = {"size": str(20 << 30)} if limit else None
    assert spawner.extra_host_config.get("storage_opt") == expected


# --- start() hands the server over once it answers ------------------------------------------


class Booting:
    """A local HTTP server standing in for a booting notebook server: refused until `up_after`
    seconds, then answering 503 `errors` times, then 200 (only at the hub's readiness path)."""

    def __init__(self, path: str, *, up_after: float, errors: int = 0):
        self.errors, self.requests, self.answered_at = errors, [], None
        booting = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                booting.requests.append((self.path, self.headers.get("Authorization")))
                status = 200 if self.path == path and booting.errors <= 0 else 503
                booting.errors -= 1
                if status == 200 and booting.answered_at is None:
                    booting.answered_at = time.monotonic()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:
                pass

        self.handler = Handler
        self.port = free_port()  # refused until it "boots"
        self.listening = None
        self.timer = threading.Timer(up_after, self._listen)
        self.timer.start()

    def _listen(self) -> None:
        self.listening = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.listening.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.timer.cancel()
        if self.listening is not None:
            self.listening.shutdown()
            self.listening.server_close()


def _container(docker_client, spawner, user: str, image: str, *command: str):
    """The server's container, running `command` (the server itself is a Booting)."""
    return docker_client.containers.run(
        image, list(command), name=spawner.container_name, labels={"nac.user": user}, detach=True
    )


def test_start_hands_the_server_to_the_hub_as_soon_as_it_answers(
    portal, docker_client, sandbox_image, user_name
):
    # given a running container whose server refuses connections for 1.2 s (past the first
    # look at the container), then answers 503 twice, then 200
    spawner = make_spawner(portal, user=user_name, server="sb-ready000001", with_server=True)
    _container(docker_client, spawner, user_name, sandbox_image, "sleep", "60")
    booting = Booting(f"/user/{user_name}/sb-ready000001/api", up_after=1.2, errors=2)
    try:
        # when the spawner waits for it
        asyncio.run(spawner.wait_answering("127.0.0.1", booting.port))
        returned = time.monotonic()
    finally:
        booting.close()

    # then it returned once the server answered below 500, not later than a check or two
    assert booting.answered_at is not None
    assert returned - booting.answered_at < 0.1 + 2 * spawner.ready_poll_seconds
    # having asked only the readiness path, with nothing of the hub's (no token)
    assert {path for path, _ in booting.requests} == {f"/user/{user_name}/sb-ready000001/api"}
    assert {auth for _, auth in booting.requests} == {None}


def test_a_server_answering_with_an_endless_body_is_judged_by_its_status_alone(
    portal, docker_client, sandbox_image, user_name
):
    # given a hostile server that answers 200 and then streams a body that never ends
    spawner = make_spawner(portal, user=user_name, server="sb-endless0001", with_server=True)
    _container(docker_client, spawner, user_name, sandbox_image, "sleep", "60")
    sent = []

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
                    sent.append(65536)
            except OSError:  # the spawner hung up
                pass

        def log_message(self, format, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    # when the spawner waits for it
    began = time.monotonic()
    try:
        asyncio.run(spawner.wait_answering("127.0.0.1", server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()

    # then it is up at once, and the spawner read next to nothing of what it was sent
    assert time.monotonic() - began < 2
    assert sum(sent) < 64 << 20


def test_a_server_that_stays_silent_is_refused_after_the_http_timeout(
    portal, docker_client, sandbox_image, user_name
):
    # given a running container where nothing ever answers, and a hub that waits 2 s for it
    spawner = make_spawner(portal, user=user_name, server="sb-silent00001", with_server=True)
    _container(docker_client, spawner, user_name, sandbox_image, "sleep", "60")
    spawner.http_timeout = 2
    booting = Booting("/never", up_after=3600)

    began = time.monotonic()
    try:
        with pytest.raises(SpawnException) as refused:
            asyncio.run(spawner.wait_answering("127.0.0.1", booting.port))
    finally:
        booting.close()

    assert 2 <= time.monotonic() - began < 4
    assert refused.value.jupyterhub_message == (
        "The sandbox's server did not answer within 2 seconds."
    )


def test_a_server_whose_container_exits_is_refused_without_waiting_out_the_timeout(
    portal, docker_client, sandbox_image, user_name
):
    # given the container of this server ran and exited (a server that crashed while booting)
    spawner = make_spawner(portal, user=user_name, server="sb-exited00001", with_server=True)
    container = _container(
        docker_client, spawner, user_name, sandbox_image, "python", "-c", "raise SystemExit(3)"
    )
    container.wait(timeout=30)
    booting = Booting("/never", up_after=3600)

    began = time.monotonic()
    try:
        with pytest.raises(SpawnException) as refused:
            asyncio.run(spawner.wait_answering("127.0.0.1", booting.port))
    finally:
        booting.close()

    # then the start is refused within a second or so, saying how the container ended
    assert time.monotonic() - began < 5
    assert refused.value.jupyterhub_message.startswith(
        "The sandbox's server stopped while starting (ExitCode=3"
    )
