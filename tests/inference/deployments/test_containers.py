"""Real engine containers from the engine image: a CPU replica becomes READY and serves the tiny
model through its own key, hardened; stopped, it is gone; the reconciler fails a replica whose
container vanished, replaces it and removes orphans; and a sandbox cannot reach an engine.

Needs docker, root and iptables (CI has all three), and the engine image (`make images`)."""

from __future__ import annotations

import contextlib
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest
from django.utils import timezone

from inference.catalogue.models import ServedModel
from inference.catalogue.starter_models import MINILM_NAME, TINY_CHAT_NAME, starter_model_get
from inference.deployments import firewall, reconcile, runner, services, tasks
from inference.deployments.models import Deployment, Replica
from inference.deployments.selectors import replicas_serving
from sandboxes.spawner import network
from tests.sandboxes.hub import free_port

from .conftest import served_model

pytestmark = pytest.mark.django_db(transaction=True)
State = Replica.State
SANDBOX_IMAGE = "nac/python-cpu:2026.11"


@pytest.fixture(scope="module")
def docker_client():
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"these tests need a running docker engine (.ci/system-deps.sh): {exc}")
    yield client
    client.close()


@pytest.fixture
def engine_image(docker_client, settings):
    image = settings.LLM_ENGINE_IMAGES["llama.cpp"]
    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the engine image {image} is not built: run `make images`")
    settings.LLM_ENGINE_CPUS = 1.0
    settings.LLM_ENGINE_MEMORY_BYTES = 1024**3
    return image


@pytest.fixture
def readable_store(model_store, settings):
    """The session's model store, copied where the engine's user (nobody) may read it: pytest's
    temporary folders are their owner's alone."""
    store = Path(tempfile.mkdtemp(prefix="nac-llm-store-"))
    store.chmod(0o755)
    for name in (TINY_CHAT_NAME, MINILM_NAME):
        weights = starter_model_get(name).weights_path
        (store / weights).parent.mkdir(parents=True, exist_ok=True)
        (store / weights).parent.chmod(0o755)
        shutil.copyfile(model_store / weights, store / weights)
        (store / weights).chmod(0o644)
    settings.MODEL_STORE_DIR = store
    yield store
    shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def tiny_chat(readable_store, engine_image) -> ServedModel:
    return served_model(
        name=f"tiny-chat-{uuid.uuid4().hex[:6]}",
        weights_path=starter_model_get(TINY_CHAT_NAME).weights_path,
        context_length=512,
    )


@pytest.fixture
def no_engines_left(docker_client):
    yield
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{runner.LABEL_MANAGED}={runner.MANAGED_BY}"}
    ):
        container.remove(force=True)


def deployed(model, manager, replicas: int = 1):
    """Deploy on CPU: the start task runs at the commit (Celery runs eagerly in tests) and
    returns once the engine answered its first probe."""
    return services.deployment_create(
        model=model, gpus_per_replica=0, replicas=replicas, acting_user=manager
    )


def chat(replica: Replica, *, key: str | None = None) -> httpx.Response:
    """A chat request straight to the engine, with its key, another key, or none ('')."""
    key = replica.api_key if key is None else key
    return httpx.post(
        f"{replica.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"} if key else {},
        json={
            "model": replica.deployment.model.name,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )


def test_a_cpu_replica_starts_serves_the_model_hardened_and_stops(
    docker_client, tiny_chat, manager, no_engines_left
):
    # when a manager deploys the tiny model on CPU
    deployment = deployed(tiny_chat, manager)
    # then its replica is READY on the engine network, and the gateway sees it
    replica = deployment.replicas.get()
    assert replica.state == State.READY, replica.message
    assert replica.base_url.startswith("http://172.30.2.")
    assert replica.node == platform.node()
    assert [t.replica_id for t in replicas_serving(model=tiny_chat)] == [replica.pk]
    # and it serves the model under its catalogue name, with its own key only
    answer = chat(replica)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == tiny_chat.name
    assert body["usage"]["completion_tokens"] > 0
    assert chat(replica, key="not-the-key").status_code == 401
    assert chat(replica, key="").status_code == 401
    # and its container is hardened
    container = docker_client.containers.get(replica.container_id)
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == 512
    assert host["Memory"] == 1024**3
    assert host["MemorySwap"] == 1024**3
    assert host["NanoCpus"] == 10**9
    assert host["Privileged"] is False
    assert host["DeviceRequests"] in (None, [])
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=256m"}  # noqa: S108
    assert container.attrs["Config"]["User"] == runner.ENGINE_USER
    assert "NVIDIA_VISIBLE_DEVICES=void" in container.attrs["Config"]["Env"]
    (mount,) = container.attrs["Mounts"]
    assert (mount["Destination"], mount["RW"]) == ("/models", False)
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [runner.engine_network().name]
    assert container.labels[runner.LABEL_REPLICA] == str(replica.public_id)
    # nothing it runs can write the weights or its root filesystem
    for path in ("/models/x", "/etc/x", "/usr/x"):
        code, _ = container.exec_run(["python3", "-c", f"open({path!r}, 'w')"])
        assert code != 0, path
    # when the deployment is stopped
    services.deployment_stop(deployment=deployment, acting_user=manager)
    # then its container is gone and the replica stopped, its time closed
    replica.refresh_from_db()
    assert replica.state == State.STOPPED
    assert replica.stopped_at is not None
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)
    assert replicas_serving(model=tiny_chat) == []


def test_the_reconciler_fails_a_vanished_container_replaces_it_and_removes_orphans(
    docker_client, tiny_chat, manager, no_engines_left
):
    # given a serving replica, and a container labelled as ours that no replica owns
    deployment = deployed(tiny_chat, manager)
    first = deployment.replicas.get()
    assert first.state == State.READY, first.message
    orphan = docker_client.containers.run(
        SANDBOX_IMAGE,
        ["sleep", "300"],
        entrypoint=[],
        detach=True,
        labels={runner.LABEL_MANAGED: runner.MANAGED_BY, runner.LABEL_REPLICA: str(uuid.uuid4())},
    )
    # when the replica's container vanishes behind the portal's back
    docker_client.containers.get(first.container_id).remove(force=True)
    result = reconcile.reconcile()
    # then the replica failed, and the orphan is gone
    first.refresh_from_db()
    assert first.state == State.FAILED
    assert "vanished" in first.message
    assert result["failed"] == 1
    assert result["orphans_removed"] == 1
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(orphan.id)
    # and no replacement comes before the back-off is over
    assert result["added"] == 0
    Replica.objects.filter(pk=first.pk).update(updated_at=timezone.now() - timezone.timedelta(60))
    result = reconcile.reconcile()
    assert result["added"] == 1
    second = deployment.replicas.exclude(pk=first.pk).get()
    assert second.state == State.READY, second.message
    assert chat(second).status_code == 200


@contextlib.contextmanager
def tcp_listener(host: str, port: int):
    server = socket.create_server((host, port))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


PROBE = (
    "import socket,sys\n"
    "for t in sys.argv[1:]:\n"
    "    h,p=t.rsplit(':',1)\n"
    "    try:\n"
    "        socket.create_connection((h,int(p)),timeout=2).close(); print(t,'open')\n"
    "    except OSError: print(t,'closed')\n"
)


def reachable(docker_client, net: str, targets: list[tuple[str, int]]) -> dict:
    """From a sandbox-like container (the sandbox image, its user, no capabilities) on `net`:
    which targets accept a TCP connection."""
    out = docker_client.containers.run(
        SANDBOX_IMAGE,
        ["python3", "-c", PROBE, *[f"{h}:{p}" for h, p in targets]],
        entrypoint=[],
        network=net,
        user="1000:100",
        cap_drop=["ALL"],
        remove=True,
    ).decode()
    result = dict(line.split() for line in out.splitlines())
    return {target: result[f"{target[0]}:{target[1]}"] == "open" for target in targets}


def test_a_sandbox_cannot_reach_an_engine_and_an_engine_cannot_reach_out(
    docker_client, tiny_chat, manager, no_engines_left
):
    # given the sandboxes' networks and firewall, and a serving replica
    hub_port = free_port()
    network.ensure(hub_port=hub_port)
    try:
        replica = deployed(tiny_chat, manager).replicas.get()
        assert replica.state == State.READY, replica.message
        engine_host = replica.base_url.split("//")[1].split(":")[0]
        engine = (engine_host, runner.ENGINE_PORT)
        open_net, internal_net = network.networks()
        hub = (open_net.gateway, hub_port)
        # the portal's host reaches the engine (the gateway's and the probe's way)
        socket.create_connection(engine, timeout=2).close()
        with tcp_listener(open_net.gateway, hub_port):
            # when sandboxes on either network try the engine directly (skipping the gateway
            # and its billing), then they cannot; the hub port they may use is open to them,
            # so the probe itself works
            from_open = reachable(docker_client, open_net.name, [engine, hub])
            from_internal = reachable(docker_client, internal_net.name, [engine, hub])
        assert from_open == {engine: False, hub: True}
        assert from_internal == {engine: False, hub: True}
        # nor does a container on Docker's default bridge (anything else on the host)
        assert reachable(docker_client, "bridge", [engine]) == {engine: False}
        # and the engine calls nobody: not out, not the sandboxes' side, not the host's own
        # services on its bridge address (one listens there: the host itself reaches it)
        host_port = free_port("0.0.0.0")  # noqa: S104
        engine_gateway = runner.engine_network().gateway
        with tcp_listener("0.0.0.0", host_port):  # noqa: S104
            socket.create_connection((engine_gateway, host_port), timeout=2).close()
            container = docker_client.containers.get(replica.container_id)
            code, out = container.exec_run(
                [
                    "python3",
                    "-c",
                    PROBE,
                    "1.1.1.1:53",
                    f"{open_net.gateway}:{host_port}",
                    f"{engine_gateway}:{host_port}",
                ]
            )
        assert code == 0, out
        assert out.decode().split() == [
            "1.1.1.1:53",
            "closed",
            f"{open_net.gateway}:{host_port}",
            "closed",
            f"{engine_gateway}:{host_port}",
            "closed",
        ]
    finally:
        network.remove_hub_port(hub_port)


def test_the_engine_network_is_internal_without_inter_container_traffic(docker_client):
    with contextlib.closing(runner.docker_client()) as engine:
        net = runner.engine_network_ensure(engine)
    attrs = docker_client.networks.get(net.name).attrs
    assert attrs["Internal"] is True
    assert attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert attrs["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert attrs["IPAM"]["Config"][0]["Subnet"] == net.subnet
    assert not attrs.get("EnableIPv6")
    assert subprocess.run(["ip", "link", "show", net.bridge], capture_output=True).returncode == 0  # noqa: S603,S607
    # and the host drops what engines send it, but replies
    assert iptables_check("INPUT", ["-i", net.bridge, "-j", firewall.INPUT_CHAIN])
    for rule in firewall.input_rules():
        assert iptables_check(firewall.INPUT_CHAIN, rule)
    assert firewall.engine_firewall_ensure(bridge=net.bridge) == []


def iptables_check(chain: str, rule: list[str]) -> bool:
    return subprocess.run(["iptables", "-C", chain, *rule], capture_output=True).returncode == 0  # noqa: S603,S607


def test_a_gpu_replica_asks_docker_for_exactly_its_devices(
    docker_client, tiny_chat, no_engines_left
):
    # given a replica holding two GPUs (by UUID)
    deployment = Deployment.objects.create(model=tiny_chat, replicas_wanted=1, gpus_per_replica=2)
    uuids = ["GPU-11111111-2222-3333-4444-555555555555", "GPU-66666666-7777-8888-9999-000000000000"]
    replica = Replica.objects.create(
        deployment=deployment, state=State.STARTING, api_key="k" * 43, gpu_uuids=uuids
    )
    spec = runner.engine_spec(replica)
    # when its container is created (a GPU container starts only on a GPU host)
    with contextlib.closing(runner.docker_client()) as engine:
        net = runner.engine_network_ensure(engine)
        container = runner.engine_container_create(engine, spec, net)
    try:
        # then it asks the NVIDIA runtime for those devices and no others
        container.reload()
        (request,) = container.attrs["HostConfig"]["DeviceRequests"]
        assert request["Driver"] == "nvidia"
        assert request["DeviceIDs"] == uuids
        assert request["Capabilities"] == [["gpu"]]
        assert f"NVIDIA_VISIBLE_DEVICES={','.join(uuids)}" in container.attrs["Config"]["Env"]
        assert "--n_gpu_layers" in container.attrs["Config"]["Cmd"]
    finally:
        container.remove(force=True)


def test_a_vllm_replica_is_made_as_vllm_wants(docker_client, tiny_chat, settings, no_engines_left):
    # given a vLLM model on two GPUs (created only: the llama.cpp image stands in for vLLM's,
    # which this machine cannot run)
    settings.LLM_ENGINE_IMAGES = {
        **settings.LLM_ENGINE_IMAGES,
        "vllm": settings.LLM_ENGINE_IMAGES["llama.cpp"],
    }
    ServedModel.objects.filter(pk=tiny_chat.pk).update(engine=ServedModel.Engine.VLLM)
    tiny_chat.refresh_from_db()
    deployment = Deployment.objects.create(model=tiny_chat, replicas_wanted=1, gpus_per_replica=2)
    replica = Replica.objects.create(
        deployment=deployment, state=State.STARTING, api_key="k" * 43, gpu_uuids=["GPU-a", "GPU-b"]
    )
    with contextlib.closing(runner.docker_client()) as engine:
        net = runner.engine_network_ensure(engine)
        container = runner.engine_container_create(engine, runner.engine_spec(replica), net)
    try:
        container.reload()
        host = container.attrs["HostConfig"]
        command = container.attrs["Config"]["Cmd"]
        # its OpenAI server, named as the catalogue, split over both GPUs
        assert command[command.index("--served-model-name") + 1] == tiny_chat.name
        assert command[command.index("--tensor-parallel-size") + 1] == "2"
        # exec allowed in its scratch space (compiled kernels), a /dev/shm for its workers,
        # and otherwise as hardened as llama.cpp
        assert host["Tmpfs"] == {"/tmp": "rw,nosuid,size=4g"}  # noqa: S108
        assert host["ShmSize"] == settings.LLM_ENGINE_MEMORY_BYTES // 2
        assert host["CapDrop"] == ["ALL"]
        assert host["ReadonlyRootfs"] is True
        assert [r["DeviceIDs"] for r in host["DeviceRequests"]] == [["GPU-a", "GPU-b"]]
    finally:
        container.remove(force=True)


def test_a_container_that_cannot_start_leaves_nothing_and_fails_its_replica(
    docker_client, tiny_chat, manager, no_engines_left, monkeypatch
):
    # given a replica whose engine cannot start: a GPU no host has (here, without the NVIDIA
    # runtime, any GPU; on a GPU host, a device that is not there)
    deployment = Deployment.objects.create(model=tiny_chat, replicas_wanted=1, gpus_per_replica=1)
    replica = Replica.objects.create(
        deployment=deployment, state=State.STARTING, api_key="k" * 43, gpu_uuids=["GPU-x"]
    )
    # when its start task runs
    assert tasks.replica_start_task(replica.pk) == "failed"
    # then it failed with Docker's reason and no container of it is left
    replica.refresh_from_db()
    assert replica.state == State.FAILED
    assert "could not start" in replica.message
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"{runner.LABEL_REPLICA}={replica.public_id}"}
        )
        == []
    )


def test_an_embedding_replica_serves_embeddings(
    docker_client, readable_store, engine_image, manager, no_engines_left
):
    # given the starter embedding model in the catalogue
    model = served_model(
        name=f"minilm-{uuid.uuid4().hex[:6]}",
        task=ServedModel.Task.EMBEDDING,
        weights_path=starter_model_get(MINILM_NAME).weights_path,
        context_length=512,
        output_price=0,
    )
    # when it is deployed on CPU
    replica = deployed(model, manager).replicas.get()
    # then its replica serves 384-dimension embeddings under the catalogue name
    assert replica.state == State.READY, replica.message
    answer = httpx.post(
        f"{replica.base_url}/embeddings",
        headers={"Authorization": f"Bearer {replica.api_key}"},
        json={"model": model.name, "input": ["a national AI cloud", "قومی مصنوعی ذہانت"]},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert [len(item["embedding"]) for item in data] == [384, 384]
