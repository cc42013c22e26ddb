"""Engine containers: start, list and remove the containers that serve a model's replicas.

Blocking Docker calls: only Celery tasks call this module, never a view or an event loop.

Each replica is one container of the engine image of its model (settings.LLM_ENGINE_IMAGES),
hardened at least as much as a sandbox:

- all capabilities dropped, no new privileges, a non-root user, a read-only root filesystem
  (a tmpfs at /tmp for the engine's scratch files: 256 MiB and noexec for llama.cpp; 4 GiB
  with exec for vLLM, whose compiled kernels live there, plus a /dev/shm for its workers),
  pids, memory (no swap beyond it) and CPU limits (LLM_ENGINE_CPUS, LLM_ENGINE_MEMORY_BYTES);
- the model store mounted read-only at /models: the engine reads its weights and writes
  nowhere;
- GPUs by UUID (a device request naming the allocated devices; NVIDIA_VISIBLE_DEVICES=void
  for a CPU replica, so the NVIDIA runtime gives none even when it is the engine's default);
- the engine's own bearer secret (`Replica.api_key`), so nothing but the gateway and the health
  probe, which hold it, is answered;
- on the engine network (`nac-llm`, bridge `nac-llm0`, 172.30.2.0/24): a Docker `--internal`
  bridge with inter-container traffic off and no masquerading. The host (the portal, its
  gateway and probe) reaches the engines at their addresses on that bridge; an engine has no
  route out; and nothing on another Docker network reaches it: Docker drops traffic forwarded
  into or out of an internal network, and the sandboxes' own firewall
  (sandboxes.spawner.network) drops what sandboxes send to private ranges and to the host. So
  a sandbox cannot call an engine directly and skip the gateway's billing
  (tests/inference/deployments/test_containers.py plays that attacker). An engine cannot call
  the host either: firewall.py drops all it sends there but replies.

The portal reaches the engines by their bridge addresses: it runs on the Docker host (as
`make run` does). A portal in a container must be attached to the engine network.

vLLM (production, GPU hosts) is started as its OpenAI server, `--served-model-name` set to the
catalogue name and `--tensor-parallel-size` to the GPUs per replica; its image's entrypoint must
be `vllm serve` (or `python -m vllm.entrypoints.openai.api_server`). Not testable here (no GPU,
no CPU build); the llama.cpp image is.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import docker
from django.conf import settings
from docker.types import DeviceRequest, IPAMConfig, IPAMPool, Mount

from inference.catalogue.models import ServedModel
from inference.catalogue.store import store_root, weights_resolve
from sandboxes.spawner.network import docker_network_problems

from .firewall import engine_firewall_ensure

logger = logging.getLogger(__name__)

ENGINE_PORT = 8000
MODELS_MOUNT = "/models"
LABEL_REPLICA = "nac.llm-replica"  # value: the replica's public id
LABEL_MANAGED = "nac.managed-by"
MANAGED_BY = "inference.deployments"
# The engine runs as nobody: it needs no user of its own, and owns nothing in the image.
ENGINE_USER = "65534:65534"


def docker_client() -> docker.DockerClient:
    # Longer than the launcher's client: stopping an engine waits out its grace period.
    return docker.DockerClient(base_url=settings.DOCKER_URL, timeout=60)


@dataclass(frozen=True)
class EngineNetwork:
    name: str
    bridge: str
    subnet: str
    gateway: str


def engine_network() -> EngineNetwork:
    return EngineNetwork(
        name=settings.LLM_ENGINE_NETWORK,
        bridge="nac-llm0",
        subnet="172.30.2.0/24",
        gateway="172.30.2.1",
    )


class EngineError(RuntimeError):
    """An engine container could not be created or started; the message says why."""


def engine_network_ensure(engine: docker.DockerClient) -> EngineNetwork:
    """Create the engine network unless it exists; refuse one that exists with other settings
    (not internal, inter-container traffic on, another subnet): engines must not start on a
    network a sandbox could reach or that leads out."""
    net = engine_network()
    _network_ensure(engine, net)
    # After the network: its bridge exists, and the jump to the chain names it.
    engine_firewall_ensure(bridge=net.bridge)
    return net


def _network_ensure(engine: docker.DockerClient, net: EngineNetwork) -> None:
    try:
        existing = engine.networks.get(net.name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None:
        problems = docker_network_problems(existing.attrs, subnet=net.subnet, internal=True)
        if problems:
            raise EngineError(
                f"docker network {net.name} exists with other settings ({'; '.join(problems)}); "
                f"remove it (docker network rm {net.name}) and start the replica again"
            )
        return
    engine.networks.create(
        net.name,
        driver="bridge",
        internal=True,
        options={
            "com.docker.network.bridge.name": net.bridge,
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.enable_ip_masquerade": "false",
        },
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=net.subnet, gateway=net.gateway)]),
        labels={LABEL_MANAGED: MANAGED_BY},
        enable_ipv6=False,
        check_duplicate=True,
    )
    logger.info("created the engine network %s (%s)", net.name, net.subnet)


@dataclass(frozen=True)
class EngineSpec:
    """Everything one replica's container is made from."""

    replica_public_id: str
    image: str
    engine: str  # ServedModel.Engine
    task: str  # ServedModel.Task
    alias: str  # the catalogue name: what clients send as `model`
    weights_in_container: str
    store_dir: str  # the model store on the host, mounted read-only
    api_key: str
    context_length: int
    gpu_uuids: list[str] = field(default_factory=list)
    cpus: float = 2.0
    mem_limit_bytes: int = 4 * 1024**3
    pids_limit: int = 512


def engine_spec(replica) -> EngineSpec:
    """The container a replica runs as. Raises EngineError when its model has no image or its
    weights are not (safely) in the model store."""
    model = replica.deployment.model
    images = getattr(settings, "LLM_ENGINE_IMAGES", {})
    if model.engine not in images:
        raise EngineError(f"no engine image is configured for {model.engine}")
    try:
        weights = weights_resolve(weights_path=model.weights_path)
    except ValueError as exc:
        raise EngineError(f"weights {model.weights_path!r}: {exc}") from exc
    if not weights.exists():
        raise EngineError(f"the weights {model.weights_path!r} are not in the model store")
    root = store_root()
    inside = PurePosixPath(MODELS_MOUNT) / weights.relative_to(root).as_posix()
    return EngineSpec(
        replica_public_id=str(replica.public_id),
        image=images[model.engine],
        engine=model.engine,
        task=model.task,
        alias=model.name,
        weights_in_container=str(inside),
        store_dir=str(root),
        api_key=replica.api_key,
        context_length=model.context_length,
        gpu_uuids=list(replica.gpu_uuids or []),
        cpus=settings.LLM_ENGINE_CPUS,
        mem_limit_bytes=settings.LLM_ENGINE_MEMORY_BYTES,
    )


def engine_args(spec: EngineSpec) -> list[str]:
    """The engine's command-line arguments (the image's entrypoint is the server itself)."""
    if spec.engine == ServedModel.Engine.VLLM:
        args = [
            "--model",
            spec.weights_in_container,
            "--served-model-name",
            spec.alias,
            "--host",
            "0.0.0.0",  # noqa: S104 - inside its own network namespace
            "--port",
            str(ENGINE_PORT),
            "--api-key",
            spec.api_key,
            "--max-model-len",
            str(spec.context_length),
            "--tensor-parallel-size",
            str(max(1, len(spec.gpu_uuids))),
        ]
        if spec.task == ServedModel.Task.EMBEDDING:
            # vLLM 0.10.1 and later; earlier releases called this `--task embed`.
            args += ["--runner", "pooling"]
        return args
    args = [
        "--model",
        spec.weights_in_container,
        "--model_alias",
        spec.alias,
        "--host",
        "0.0.0.0",  # noqa: S104 - inside its own network namespace
        "--port",
        str(ENGINE_PORT),
        "--api_key",
        spec.api_key,
        "--n_ctx",
        str(spec.context_length),
        # The default lets a second request cut off the stream in flight (MODELS.md §7).
        "--interrupt_requests",
        "false",
        "--n_threads",
        str(max(1, int(spec.cpus))),
    ]
    if spec.gpu_uuids:
        args += ["--n_gpu_layers", "-1"]
    if spec.task == ServedModel.Task.EMBEDDING:
        args += ["--embedding", "true"]
    return args


def engine_container_create(engine: docker.DockerClient, spec: EngineSpec, net: EngineNetwork):
    """Create (not start) the replica's container, hardened as the module says."""
    environment = {
        "HOME": "/tmp",  # noqa: S108 - the container's own tmpfs
        "NVIDIA_VISIBLE_DEVICES": ",".join(spec.gpu_uuids) if spec.gpu_uuids else "void",
    }
    device_requests = (
        [DeviceRequest(driver="nvidia", device_ids=spec.gpu_uuids, capabilities=[["gpu"]])]
        if spec.gpu_uuids
        else None
    )
    if spec.engine == ServedModel.Engine.VLLM:
        # vLLM compiles kernels (Triton, torch.compile) into its cache under $HOME and loads
        # them, so its scratch space must allow exec; its workers share tensors through
        # /dev/shm, which Docker makes 64 MiB by default. Both count against the memory limit.
        scratch = "rw,nosuid,size=4g"
        shm_size = min(spec.mem_limit_bytes // 2, 8 * 1024**3)
    else:
        scratch = "rw,noexec,nosuid,size=256m"
        shm_size = None
    return engine.containers.create(
        spec.image,
        engine_args(spec),
        name=f"nac-llm-{spec.replica_public_id}",
        user=ENGINE_USER,
        environment=environment,
        labels={
            LABEL_REPLICA: spec.replica_public_id,
            LABEL_MANAGED: MANAGED_BY,
            "nac.llm-model": spec.alias,
            "nac.gpus": ",".join(spec.gpu_uuids),
        },
        network=net.name,
        dns=[net.gateway],  # a name server nothing answers: no query leaves
        mounts=[Mount(target=MODELS_MOUNT, source=spec.store_dir, type="bind", read_only=True)],
        read_only=True,
        tmpfs={"/tmp": scratch},  # noqa: S108
        shm_size=shm_size,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=spec.pids_limit,
        mem_limit=spec.mem_limit_bytes,
        memswap_limit=spec.mem_limit_bytes,
        nano_cpus=int(spec.cpus * 1e9),
        device_requests=device_requests,
        restart_policy={"Name": "no"},
    )


def _remove_replica_containers(engine: docker.DockerClient, public_id: str) -> None:
    for old in engine.containers.list(all=True, filters={"label": f"{LABEL_REPLICA}={public_id}"}):
        old.remove(force=True)


def engine_container_run(spec: EngineSpec) -> tuple[str, str]:
    """Create and start the replica's container; returns (container id, base URL).

    A container left from an earlier try of the same replica is removed first (a retried task
    must not leave two engines holding the same GPUs), and one that cannot start is removed
    (the replica fails; nothing of it is left behind)."""
    with closing(docker_client()) as engine:
        net = engine_network_ensure(engine)
        _remove_replica_containers(engine, spec.replica_public_id)
        try:
            container = engine_container_create(engine, spec, net)
            container.start()
            container.reload()
        except docker.errors.DockerException as exc:
            _remove_replica_containers(engine, spec.replica_public_id)
            raise EngineError(f"the engine container could not start: {exc}") from exc
        address = (container.attrs["NetworkSettings"]["Networks"].get(net.name) or {}).get(
            "IPAddress"
        )
        if not address:
            container.remove(force=True)
            raise EngineError("the engine container got no address on the engine network")
        return container.id, f"http://{address}:{ENGINE_PORT}/v1"


@dataclass(frozen=True)
class EngineContainer:
    container_id: str
    replica_public_id: str
    status: str  # Docker's: created, running, exited, dead ...


def engine_containers() -> list[EngineContainer]:
    """Every container this portal started for a replica (by its label), whatever its state."""
    with closing(docker_client()) as engine:
        containers = engine.containers.list(
            all=True, filters={"label": [f"{LABEL_MANAGED}={MANAGED_BY}", LABEL_REPLICA]}
        )
        return [
            EngineContainer(c.id, c.labels.get(LABEL_REPLICA, ""), c.status) for c in containers
        ]


def engine_container_status(container_id: str) -> str | None:
    """The container's Docker status, or None when it is gone."""
    with closing(docker_client()) as engine:
        try:
            return engine.containers.get(container_id).status
        except docker.errors.NotFound:
            return None


def engine_container_logs_tail(container_id: str, *, lines: int = 5) -> str:
    """The last lines the engine wrote (why a start failed), '' when there are none."""
    with closing(docker_client()) as engine:
        try:
            raw = engine.containers.get(container_id).logs(tail=lines)
        except docker.errors.NotFound:
            return ""
    return raw.decode(errors="replace").strip()


def engine_container_remove(container_id: str, *, grace_seconds: int = 10) -> bool:
    """Stop (SIGTERM, then SIGKILL after `grace_seconds`) and remove the container. False when
    it was gone already."""
    with closing(docker_client()) as engine:
        try:
            container = engine.containers.get(container_id)
        except docker.errors.NotFound:
            return False
        try:
            if container.status == "running":
                container.stop(timeout=grace_seconds)
            container.remove(force=True)
        except docker.errors.NotFound:
            return False
    return True
