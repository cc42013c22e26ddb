"""PortalSpawner: a DockerSpawner that starts only what the portal authorised, exactly as specified.

Before every start the spawner asks the portal's internal API (`POST /internal/hub/spawn-spec/`)
what this server may be: image, CPU, memory, /dev/shm, pids, GPU UUIDs, home volume, egress
network, environment and labels. Nothing the browser or a user token sends (`user_options`, the
spawn form, query parameters) has any effect. A refusal from the portal becomes a
`SpawnException` carrying the portal's reason, so the user (and the portal's progress stream)
sees why. After a stop the spawner tells the portal (`POST /internal/hub/server-stopped/`), best
effort: the portal's reconciler covers a lost message. It sends back the spec's `start` id (kept
in the spawner's state, so a hub restart does not lose it): a restart reuses the server name,
and the portal must not take a late report about an earlier start for the current one.

Docker SDK calls stay off the event loop (DockerSpawner runs them in its thread pool); the portal
is called with an async HTTP client.

A start returns once the new server answers, checked every `ready_poll_seconds` (50 ms): the
hub's own check, which then passes at its first try, backs off (0.2 s, doubling, to 5 s, with
jitter), so a server that is up just after one of its tries would wait idle for the next.

One module on purpose (about 500 lines): JupyterHub loads it by name inside the hub, where no
Django runs, and the spec's validation, its application to the container and the lifecycle
hooks each need the others in view to be checked against the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import re
import ssl
from dataclasses import dataclass, field

import docker.errors
import httpx
from dockerspawner import DockerSpawner
from jupyterhub.spawner import SpawnException
from jupyterhub.utils import url_path_join
from traitlets import Float, Integer, Unicode, default

from .network import sandbox_dns_servers

SPEC_VERSION = 1
HOME = "/home/jovyan"
SANDBOX_USER = "1000:100"  # jovyan:users in every sandbox image

# Docker volume names; a leading "/" or "." would turn a named volume into a host bind mount.
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# NVML UUIDs of whole GPUs ("GPU-<uuid>") and MIG instances ("MIG-<uuid>").
_GPU_UUID = re.compile(r"^(GPU|MIG)-[A-Za-z0-9-]{1,80}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_background: set[asyncio.Future] = set()  # strong references to fire-and-forget tasks
_RESERVED_ENV_PREFIXES = ("JUPYTERHUB_", "JPY_", "NVIDIA_", "CUDA_VISIBLE_DEVICES")
_BRACES = re.compile(r"[{}]")
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_START_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context, built once: building it reads the CA bundle (tens of
    milliseconds, on the hub's event loop), and each client would build its own."""
    return httpx.create_ssl_context()


class PortalUnreachable(Exception):
    """The portal's internal API did not answer (connection failure, timeout, 5xx)."""


@dataclass(frozen=True)
class SpawnSpec:
    """The portal's answer to "what may this server be?" (contract version 1), validated."""

    sandbox: str
    image: str
    cpu_limit: float
    mem_limit_bytes: int
    shm_size_bytes: int
    pids_limit: int
    volume: str
    egress: str
    gpu_uuids: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    start: str = ""  # which start of the sandbox this is; empty from an older portal
    disk_bytes: int = 0  # writable-layer limit, where the storage driver has one; 0: none

    @classmethod
    def from_json(cls, data: object) -> SpawnSpec:
        """Validate the portal's JSON; a ValueError names the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("the spawn spec is not a JSON object")
        if data.get("version") != SPEC_VERSION:
            raise ValueError(f"unsupported spawn spec version {data.get('version')!r}")

        def positive(name: str, kind: type) -> int | float:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number")
            if kind is int and int(value) != value:
                raise ValueError(f"{name} must be an integer")
            return kind(value)

        image = data.get("image")
        if not isinstance(image, str) or not image or image.startswith("-") or " " in image:
            raise ValueError("image must be an image reference")
        volume = data.get("volume")
        if not isinstance(volume, str) or not _VOLUME_NAME.match(volume):
            raise ValueError("volume must be a docker volume name")
        egress = data.get("egress")
        if egress not in ("open", "internal"):
            raise ValueError("egress must be 'open' or 'internal'")
        uuids = data.get("gpu_uuids") or []
        if not isinstance(uuids, list) or not all(
            isinstance(u, str) and _GPU_UUID.match(u) for u in uuids
        ):
            raise ValueError("gpu_uuids must be a list of GPU/MIG UUIDs")
        if len(set(uuids)) != len(uuids):
            raise ValueError("gpu_uuids has duplicates")
        environment = data.get("environment") or {}
        if not isinstance(environment, dict) or not all(
            isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str)
            for k, v in environment.items()
        ):
            raise ValueError("environment must map variable names to strings")
        reserved = [k for k in environment if k.upper().startswith(_RESERVED_ENV_PREFIXES)]
        if reserved:
            # Spawner.environment is applied last: it must not replace the hub's token and URLs
            # or choose GPUs behind the device request's back.
            raise ValueError(f"environment may not set {', '.join(sorted(reserved))}")
        labels = data.get("labels") or {}
        # No braces: DockerSpawner formats label strings as templates ({username} ...).
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and not _BRACES.search(k + v)
            for k, v in labels.items()
        ):
            raise ValueError("labels must map strings to strings (without braces)")
        sandbox = data.get("sandbox")
        if not isinstance(sandbox, str) or not sandbox:
            raise ValueError("sandbox must be the sandbox id")
        disk_bytes = data.get("disk_bytes", 0)
        if isinstance(disk_bytes, bool) or not isinstance(disk_bytes, int) or disk_bytes < 0:
            raise ValueError("disk_bytes must be a whole number of bytes (0: no limit)")
        start = data.get("start") or ""
        if not isinstance(start, str) or (start and not _START_ID.match(start)):
            raise ValueError("start must be the start id")
        return cls(
            sandbox=sandbox,
            image=image,
            cpu_limit=positive("cpu_limit", float),
            mem_limit_bytes=positive("mem_limit_bytes", int),
            shm_size_bytes=positive("shm_size_bytes", int),
            pids_limit=positive("pids_limit", int),
            volume=volume,
            egress=egress,
            gpu_uuids=tuple(uuids),
            environment=dict(environment),
            labels=dict(labels),
            start=start,
            disk_bytes=disk_bytes,
        )


def storage_description(info: dict) -> str:
    status = dict(info.get("DriverStatus") or [])
    backing = status.get("Backing Filesystem")
    return f"{info.get('Driver')} on {backing}" if backing else str(info.get("Driver"))


def storage_size_supported(info: dict) -> bool:
    """Whether `docker info` names a storage driver that enforces `--storage-opt size`: overlay2
    only on XFS (which must also be mounted with pquota: the engine refuses the container
    otherwise, and the spawn fails loudly rather than running unbounded)."""
    driver = info.get("Driver")
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem")
    return driver in ("btrfs", "zfs", "devicemapper") or (driver == "overlay2" and backing == "xfs")


class PortalSpawner(DockerSpawner):
    """Start a sandbox container exactly as the portal's spawn spec says, or not at all."""

    spawn_spec: SpawnSpec | None = None  # the spec of the current (or last) start
    # Whether the engine can cap a writable layer (storage_opt size); asked once per hub process.
    writable_layer_limit: bool | None = None
    portal_start: str = ""  # the portal's id of the current start (persisted in the state)

    portal_internal_url = Unicode(
        help="""Base URL of the portal's internal API, as the hub reaches it
        (default: $PORTAL_INTERNAL_URL, else http://127.0.0.1:8000).""",
    ).tag(config=True)

    @default("portal_internal_url")
    def _default_portal_internal_url(self):
        return os.environ.get("PORTAL_INTERNAL_URL", "http://127.0.0.1:8000")

    spawn_secret = Unicode(
        help="""Bearer secret sent to the portal's internal API (default: $HUB_SPAWN_SECRET).""",
    ).tag(config=True)

    @default("spawn_secret")
    def _default_spawn_secret(self):
        return os.environ.get("HUB_SPAWN_SECRET", "")

    portal_timeout = Float(
        10.0, help="Seconds to wait for one answer from the portal's internal API."
    ).tag(config=True)

    portal_retries = Integer(
        2,
        help="""Extra attempts at the portal after a connection error, timeout or 5xx,
        with back-off (0.5 s, then doubling).""",
    ).tag(config=True)

    open_network = Unicode(
        help="""Docker network for sandboxes with `open` egress (default: $SANDBOX_NETWORK,
        else nac-sandboxes).""",
    ).tag(config=True)

    @default("open_network")
    def _default_open_network(self):
        return os.environ.get("SANDBOX_NETWORK", "nac-sandboxes")

    internal_network = Unicode(
        help="""Docker network for sandboxes with `internal` egress, which has no route out
        (default: $SANDBOX_NETWORK_INTERNAL, else nac-sandboxes-internal).""",
    ).tag(config=True)

    @default("internal_network")
    def _default_internal_network(self):
        return os.environ.get("SANDBOX_NETWORK_INTERNAL", "nac-sandboxes-internal")

    ready_poll_seconds = Float(
        0.05,
        help="""Seconds between checks that a new server answers, before start() hands it to
        the hub (whose own check backs off from 0.2 s to 5 s).""",
    ).tag(config=True)

    sandbox_user = Unicode(SANDBOX_USER, help="uid:gid the sandbox runs as; never root.").tag(
        config=True
    )

    @default("name_template")
    def _default_name_template(self):
        # hub server names are [a-z0-9-] (validated by the hub), so they need no escaping
        return "nac-{username}--{raw_servername}"

    # --- nothing a user sends has any effect --------------------------------------------------

    @default("options_form")
    def _default_options_form(self):
        return ""

    @default("options_from_form")
    def _default_options_from_form(self):
        return lambda formdata: {}

    def options_from_query(self, query_data):
        return {}

    async def _run_apply_user_options(self, user_options):
        # The hub calls this with whatever the browser or a token POSTed; all of it is dropped.
        # The portal's spawn spec is the only input to a start.
        if user_options:
            self.log.info(
                "Ignoring user_options for %s (keys: %s): sandboxes are specified by the portal",
                self._log_name,
                ", ".join(sorted(map(str, user_options))),
            )
        self.user_options = {}

    async def check_allowed(self, image):
        # Only reached through user_options["image"], which start() always clears: refuse anyway.
        raise _refusal("The portal chooses the image of a sandbox.", reason="image")

    # --- the portal ----------------------------------------------------------------------------

    def _portal_payload(self) -> dict:
        return {"username": self.user.name, "server_name": self.name}

    def get_state(self):
        state = super().get_state()
        if self.portal_start and self.object_id:  # while a container exists
            state["nac_start"] = self.portal_start
        return state

    def load_state(self, state):
        super().load_state(state)
        self.portal_start = state.get("nac_start", "") or self.portal_start

    async def _portal_post(
        self, path: str, *, retries: int, extra: dict | None = None
    ) -> httpx.Response:
        """POST the payload (and `extra`) to the portal; retries connection errors, timeouts
        and 5xx."""
        url = self.portal_internal_url.rstrip("/") + path
        headers = {"Authorization": f"Bearer {self.spawn_secret}"}
        delay = 0.5
        problem = ""
        async with httpx.AsyncClient(timeout=self.portal_timeout, verify=_tls()) as client:
            for attempt in range(retries + 1):
                if attempt:
                    await asyncio.sleep(delay)
                    delay *= 2
                try:
                    response = await client.post(
                        url, json={**self._portal_payload(), **(extra or {})}, headers=headers
                    )
                except httpx.TransportError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code not in _RETRY_STATUSES:
                        return response
                    problem = f"HTTP {response.status_code}"
                self.log.warning(
                    "portal %s for %s: %s (attempt %d of %d)",
                    path,
                    self._log_name,
                    problem,
                    attempt + 1,
                    retries + 1,
                )
        raise PortalUnreachable(f"POST {url}: {problem}")

    async def fetch_spawn_spec(self) -> SpawnSpec:
        """Ask the portal what this server may be; SpawnException unless it says exactly."""
        try:
            response = await self._portal_post(
                "/internal/hub/spawn-spec/", retries=self.portal_retries
            )
        except PortalUnreachable as exc:
            self.log.error("spawn spec for %s: %s", self._log_name, exc)
            raise _refusal(
                "The portal is unreachable, so this sandbox cannot be started. Try again later.",
                reason="portal-unreachable",
                status_code=503,
            ) from None
        if response.status_code != 200:
            detail = _detail(response)
            self.log.warning(
                "portal refused %s: HTTP %s %s", self._log_name, response.status_code, detail
            )
            if response.status_code == 401:
                message = "The hub is not authorised at the portal (spawn secret rejected)."
            else:
                message = detail or f"The portal refused this start (HTTP {response.status_code})."
            raise _refusal(
                message,
                reason="portal-refused",
                status_code=403 if response.status_code in (401, 403) else 400,
            )
        try:
            return SpawnSpec.from_json(response.json())
        except ValueError as exc:
            self.log.error("spawn spec for %s rejected: %s", self._log_name, exc)
            raise _refusal(
                "The portal sent an invalid sandbox specification.",
                reason="portal-invalid",
                status_code=500,
            ) from None

    def apply_spawn_spec(self, spec: SpawnSpec) -> None:
        """Set every container setting from the spec; nothing is left to earlier state."""
        self.spawn_spec = spec
        self.portal_start = spec.start
        self.user_options = {}
        self.image = spec.image
        self.allowed_images = {}
        self.pull_policy = "never"  # images are built or pre-pulled on the host, never at spawn
        self.remove = True  # a restart must never reuse an old container and its old GPUs
        self.cpu_limit = spec.cpu_limit
        self.mem_limit = spec.mem_limit_bytes
        self.network_name = self.open_network if spec.egress == "open" else self.internal_network
        self.use_internal_ip = True
        self.volumes = {}
        self.read_only_volumes = {}
        # type=volume: a named docker volume, never a host path
        self.mounts = [{"type": "volume", "source": spec.volume, "target": HOME}]
        environment = dict(spec.environment)
        if spec.gpu_uuids:
            environment["NVIDIA_VISIBLE_DEVICES"] = ",".join(spec.gpu_uuids)
        else:
            # "void": the NVIDIA runtime behaves like runc, even if it is the engine's default
            # runtime and the image declares NVIDIA_VISIBLE_DEVICES=all (CUDA base images do).
            environment["NVIDIA_VISIBLE_DEVICES"] = "void"
        self.environment = environment
        host_config = {
            "shm_size": spec.shm_size_bytes,
            "pids_limit": spec.pids_limit,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "memswap_limit": spec.mem_limit_bytes,  # no swap beyond the memory limit
        }
        dns = sandbox_dns_servers(spec.egress)
        if dns:
            # internal: a name server nothing answers, so no query leaves by the engine's resolver
            host_config["dns"] = dns
        if spec.disk_bytes and self.writable_layer_limit:
            host_config["storage_opt"] = {"size": str(spec.disk_bytes)}
        if spec.gpu_uuids:
            host_config["device_requests"] = [
                {
                    "Driver": "nvidia",
                    "DeviceIDs": list(spec.gpu_uuids),
                    "Capabilities": [["gpu"]],
                }
            ]
        self.extra_host_config = host_config
        labels = {
            **spec.labels,
            "nac.sandbox": spec.sandbox,
            "nac.user": self.user.name,
            "nac.server": self.name,
            "nac.gpus": ",".join(spec.gpu_uuids),
        }
        self.extra_create_kwargs = {"user": self.sandbox_user, "labels": labels}

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self):
        spec = await self.fetch_spawn_spec()
        if PortalSpawner.writable_layer_limit is None:
            info = await self.docker("info")
            PortalSpawner.writable_layer_limit = storage_size_supported(info)
            if not PortalSpawner.writable_layer_limit:
                self.log.warning(
                    "The Docker storage driver (%s) cannot limit a container's writable layer: "
                    "sandboxes' own files are bounded only by the disk (home folders have quotas)",
                    storage_description(info),
                )
        self.apply_spawn_spec(spec)
        self.log.info(
            "Starting sandbox %s for %s: image=%s cpus=%s mem=%d gpus=%s egress=%s",
            spec.sandbox,
            self._log_name,
            spec.image,
            spec.cpu_limit,
            spec.mem_limit_bytes,
            ",".join(spec.gpu_uuids) or "-",
            spec.egress,
        )
        ip, port = await super().start()
        await self.wait_answering(ip, port)
        return ip, port

    async def wait_answering(self, ip: str, port: int) -> None:
        """Return once the server answers as the hub's readiness check wants (any status below
        500 at its `api` path); refuse the start if its container stops or it stays silent
        for `http_timeout`. Nothing is sent but a bare GET: the server is the user's."""
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{port}" + url_path_join(self.server.base_url, "api")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.http_timeout
        next_look = loop.time() + 1
        async with httpx.AsyncClient(timeout=2, trust_env=False, verify=_tls()) as client:
            while loop.time() < deadline:
                # A TCP connect first, a fraction of an HTTP request's cost (ten servers starting
                # at once on a small host make that count): the port refuses until the server
                # listens, and only then is it asked over HTTP.
                if await _accepts(ip, port):
                    # The status alone: the server is the user's, and its body is never read.
                    with contextlib.suppress(httpx.TransportError):
                        async with client.stream("GET", url) as response:
                            if response.status_code < 500:
                                return
                # Once a second, whether the container still runs (a crashed server never
                # answers, and the hub's own check would wait out its timeout).
                if loop.time() >= next_look:
                    next_look = loop.time() + 1
                    if (exited := await self.poll()) is not None:
                        how = exited if isinstance(exited, str) else "its container is gone"
                        raise _refusal(
                            f"The sandbox's server stopped while starting ({how}).",
                            reason="server-exited",
                            status_code=500,
                        )
                await asyncio.sleep(self.ready_poll_seconds)
        raise _refusal(
            f"The sandbox's server did not answer within {self.http_timeout} seconds.",
            reason="server-timeout",
            status_code=500,
        )

    async def stop(self, now=False):
        if not self.object_id:
            # the start was refused before any container existed
            self.clear_state()
            return
        await super().stop(now=now)

    async def pull_image(self, image):
        try:
            await super().pull_image(image)
        except docker.errors.NotFound:
            raise _refusal(
                f"The sandbox image {image} is not installed on this host.",
                reason="image-missing",
                status_code=500,
            ) from None

    async def run_post_stop_hook(self):
        result = super().run_post_stop_hook()
        if inspect.isawaitable(result):
            try:
                await result
            except Exception:
                self.log.exception("post_stop_hook failed for %s", self._log_name)
        # In the background: the hub's stop (and a failed spawn's cleanup, during which the
        # progress API answers "not starting") should not wait on the portal's answer. The start
        # id is taken now (DockerSpawner.stop has cleared the state already, but not this), and
        # only once: the next start brings its own.
        start, self.portal_start = self.portal_start, ""
        task = asyncio.ensure_future(self.notify_stopped(start=start))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def notify_stopped(self, start: str = "") -> None:
        """Tell the portal the server of `start` is gone; best effort (its reconciler catches
        misses)."""
        try:
            response = await self._portal_post(
                "/internal/hub/server-stopped/",
                retries=1,
                extra={"start": start} if start else None,
            )
        except PortalUnreachable as exc:
            self.log.warning("could not tell the portal %s stopped: %s", self._log_name, exc)
            return
        if response.status_code >= 300:
            self.log.warning(
                "portal answered %s to server-stopped for %s: %s",
                response.status_code,
                self._log_name,
                _detail(response),
            )
        else:
            self.log.info("told the portal %s stopped", self._log_name)


async def _accepts(ip: str, port: int) -> bool:
    """Whether something listens at ip:port (a TCP connect, closed at once)."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _refusal(message: str, *, reason: str, status_code: int = 400) -> SpawnException:
    """A SpawnException whose message is exactly what the user (and the portal) will read.

    The progress stream shows `jupyterhub_message` when an exception has one, instead of
    str(exception), which carries the status and reason label."""
    exc = SpawnException(message, reason=reason, status_code=status_code)
    exc.jupyterhub_message = message
    return exc


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return data["detail"]
    return ""
