"""A real JupyterHub for tests: sandboxes/spawner/jupyterhub_config.py, real
configurable-http-proxy, real PortalSpawner and docker, on free ports with a throwaway HUB_DATA_DIR.

    with running_hub(portal_internal_url=live_server.url, env={...}) as hub:
        httpx.post(f"{hub.api_url}/users/alice", headers=hub.headers)

The hub asks `portal_internal_url` for spawn specs, so the portal there must accept
`hub.spawn_secret` (pass HUB_SPAWN_SECRET in `env` to choose it). Needs root (the sandbox
firewall) and a running docker engine. On exit every server the hub knows is stopped, the hub is
asked to stop (SIGTERM, which stops its proxy and its managed services, as Ctrl-C does under
`make run`), then whatever of it is left is ended (`hub_processes`), and the firewall rule for
its throwaway port is withdrawn. JupyterHub starts configurable-http-proxy and each managed
service (the idle culler) in a session of its own, so a hub that dies without its cleanup leaves
them running: they are found by the hub's working directory, which they inherit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from jupyterhub.utils import subdomain_hook_idna

from sandboxes.spawner import network

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "sandboxes" / "spawner" / "jupyterhub_config.py"
JUPYTERHUB = Path(sys.executable).parent / "jupyterhub"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RunningHub:
    public_url: str  # the proxy, as a browser sees it
    api_url: str  # {public_url}/hub/api, what the portal's HUB_API_URL would be
    api_token: str  # token of the service "portal"
    spawn_secret: str  # what the spawner sends to the portal
    hub_port: int
    proxy_api_port: int
    data_dir: Path
    log_path: Path
    pid: int  # the jupyterhub process
    env: dict[str, str] = field(repr=False)
    started_seconds: float = 0.0  # process start to API answering through the proxy

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.api_token}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def user_origin(self, hub_username: str) -> str:
        """Where this person's servers answer: their own host below the hub's."""
        hub = urlsplit(self.public_url)
        host = subdomain_hook_idna(hub_username, hub.hostname, "user")
        return f"{hub.scheme}://{host}:{hub.port}"

    def server_url(self, hub_username: str, server_name: str) -> str:
        return f"{self.user_origin(hub_username)}/user/{hub_username}/{server_name}/"

    def client(self, **kwargs) -> httpx.Client:
        """An httpx client on the hub API with the portal's service token."""
        return httpx.Client(base_url=self.api_url, headers=self.headers, timeout=30, **kwargs)


def _wait_up(url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"jupyterhub exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"jupyterhub did not answer in {timeout}s:\n{log_path.read_text()[-4000:]}")


# --- The hub's processes ----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command, in parentheses, may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def still_running(pid: int, started: int) -> bool:
    """The same process (not a later one given its pid) is still there, and not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def hub_processes(hub: RunningHub) -> dict[int, int]:
    """The hub and every process it started that still runs ({pid: start time}): its children
    and theirs, and anything working in its data directory, which finds the proxy and the
    managed services even after a hub that died let them go to init."""
    data_dir = os.path.realpath(hub.data_dir)
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    found = {hub.pid} if hub.pid in stats else set()
    for pid in stats:
        with contextlib.suppress(OSError):
            cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
            if cwd == data_dir or cwd.startswith(data_dir + os.sep):
                found.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (_state, parent, _started) in stats.items():
        children.setdefault(parent, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid: stats[pid][2] for pid in found if stats[pid][0] != "Z"}


def _end(processes: dict[int, int], *, grace: float = 10) -> None:
    """SIGTERM, then after `grace` seconds SIGKILL, whichever of `processes` still runs."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        alive = [pid for pid, started in processes.items() if still_running(pid, started)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if still_running(pid, processes[pid])]
        if not alive:
            return


def _stop_hub(hub: RunningHub, process: subprocess.Popen) -> None:
    """Stop the hub as `make run`'s Ctrl-C does (it stops its proxy and services itself), then end
    whatever of it is left: all of it when the hub had died or does not exit in time."""
    started = hub_processes(hub)  # while the hub lives, its children are found by parent too
    if process.poll() is None:
        _stop_all_servers(hub)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    _end({**started, **hub_processes(hub)})


def _stop_all_servers(hub: RunningHub) -> None:
    with contextlib.suppress(httpx.HTTPError), hub.client() as api:
        users = api.get("/users", params={"state": "active"})
        if users.status_code != 200:
            return
        for user in users.json():
            for name in user.get("servers") or {}:
                path = f"/users/{user['name']}/servers/{name}"
                api.request("DELETE", path, json={"remove": True})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            active = api.get("/users", params={"state": "active"}).json()
            if not active:
                return
            time.sleep(0.3)


@contextlib.contextmanager
def running_hub(
    *,
    portal_internal_url: str,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    config: Path = CONFIG,
) -> Iterator[RunningHub]:
    """Start the hub; yields a RunningHub. `env` overrides any hub variable (see the config);
    `config` another configuration read with the same variables (the benchmark's bare hub)."""
    network.ensure_networks()  # the hub listens on the open network's gateway
    hub_port = free_port(network.hub_ip())
    public_port = free_port()
    proxy_api_port = free_port()
    with tempfile.TemporaryDirectory(prefix="nac-hub-") as tmp:
        data_dir = Path(tmp)
        hub_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "JUPYTERHUB_"))},
            "PYTHONPATH": str(REPO),
            # a host name of its own (not the portal's 127.0.0.1): users' servers are on
            # <user>.hub.localhost, which resolves to loopback (nss-myhostname, Chromium)
            "HUB_PUBLIC_URL": f"http://hub.localhost:{public_port}",
            "HUB_PROXY_API_PORT": str(proxy_api_port),
            "HUB_INTERNAL_PORT": str(hub_port),
            "HUB_DATA_DIR": str(data_dir),
            "HUB_API_TOKEN": secrets.token_hex(32),
            "HUB_SPAWN_SECRET": secrets.token_urlsafe(32),
            "HUB_OIDC_CLIENT_ID": "test-hub",
            "HUB_OIDC_CLIENT_SECRET": secrets.token_urlsafe(32),
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
            "PORTAL_INTERNAL_URL": portal_internal_url,
            "PORTAL_PUBLIC_URL": portal_internal_url,
            "CONFIGPROXY_AUTH_TOKEN": "",
            **(env or {}),
        }
        port = int(hub_env["HUB_INTERNAL_PORT"])
        network.ensure(hub_port=port)
        log_path = data_dir / "jupyterhub.log"
        public_url = hub_env["HUB_PUBLIC_URL"].rstrip("/")
        started = time.monotonic()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(  # noqa: S603
                [str(JUPYTERHUB), "-f", str(config)],
                cwd=data_dir,
                env=hub_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        hub = RunningHub(
            public_url=public_url,
            api_url=f"{public_url}/hub/api",
            api_token=hub_env["HUB_API_TOKEN"],
            spawn_secret=hub_env["HUB_SPAWN_SECRET"],
            hub_port=port,
            proxy_api_port=int(hub_env["HUB_PROXY_API_PORT"]),
            data_dir=data_dir,
            log_path=log_path,
            pid=process.pid,
            env=hub_env,
        )
        try:
            _wait_up(f"{hub.api_url}/", process, log_path, timeout)
            hub.started_seconds = time.monotonic() - started
            yield hub
        finally:
            _stop_hub(hub, process)
            if port != 8081:
                network.remove_hub_port(port)
