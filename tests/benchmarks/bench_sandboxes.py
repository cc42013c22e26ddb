"""Sandbox launch latency through the portal against a bare hub, stage by stage: `make bench`.

Everything real, on this machine: PostgreSQL (a database of its own, BENCH_SANDBOX_DATABASE,
default portal_bench_sandboxes, created, migrated and dropped here), Redis (database 13), the
portal under uvicorn, a Celery worker as `make run` starts it (.procfile), the portal's
JupyterHub with its spawner, and Docker running nac/python-cpu:2026.11 (`make images`).

The baseline, measured in the same run on the same machine: a bare JupyterHub + DockerSpawner
(tests/benchmarks/bare_hub_config.py: no portal, no sign-in, no spawn check) starting the same
image with the same container options (the profile's limits, the hardening, a home volume, the
same network and server arguments; the warm-up launches compare the two containers and stop the
benchmark if they differ). Launches interleave, one of each side per round, the side that goes
first alternating, BENCH_SANDBOX_ROUNDS rounds (default 10) after one warm-up each: the machine
is shared, and interleaving spreads its noise over both sides alike. Each launch is timed the
same way: from the request to the first poll (every 100 ms) that sees it ready (portal: the API
says `running`; bare hub: its REST API says `ready`); both rest on the hub's own readiness check.

Each launch is traced on one clock, from the hubs' logs (the start request's arrival, the
spawner's spawn spec, "took N seconds to start"), the Docker engine's events (container create
and start) and the portal's database (the moment it recorded `running`). It prints the median of
each stage and of the whole launch, the stop, and ten people launching at once:

  BENCH launch_stage_<stage>: <ms> ms (baseline <ms> ms, ratio <r>)   (0 ms: the bare hub has
                                                                        no such stage)
  BENCH sandbox_launch_outside_boot: <ms> ms (baseline <ms> ms, ratio <r>)   (all but
                                        server_ready: what the portal adds to a launch)
  BENCH sandbox_launch: <median s> s (baseline <median s> s, ratio <r>)
  BENCH sandbox_stop_to_released: ...   (portal: stopped and its GPU free; hub: server gone)
  BENCH sandbox_launch_10_concurrent_p50 / _p95: ...   (10 people launch at the same moment)

with every round's figures, and the target (launch ratio <= 1.10). Exit status 2 when
BENCH_STRICT=1 and it is missed.
"""

import contextlib
import json
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_SANDBOX_DATABASE", "portal_bench_sandboxes")
ROUNDS = int(os.environ.get("BENCH_SANDBOX_ROUNDS", "10"))
# People launching at the same moment in the last phase (0 leaves it out).
CONCURRENT = int(os.environ.get("BENCH_SANDBOX_CONCURRENT", "10"))
IMAGE = "nac/python-cpu:2026.11"
PROFILE = "gpu-1"  # the profile of the interleaved rounds; the concurrent phase uses cpu-small
TARGET = 1.10
POLL = 0.1
# Ten clients polling at 10 Hz are themselves a load on a 2-core machine (the portal answers
# each poll through Django and PostgreSQL): the concurrent phase polls each side at 1 Hz.
POLL_CONCURRENT = float(os.environ.get("BENCH_SANDBOX_POLL_CONCURRENT", "1.0"))
BARE_USER = "bench0"  # the bare hub's user of the interleaved rounds

PORTAL_ENV = {
    "DJANGO_SETTINGS_MODULE": "portal.settings.local",
    "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
    "DEBUG": "False",
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "API_KEY_PEPPER": secrets.token_urlsafe(32),
    "API_KEY_RATE_LIMIT_REQUESTS": str(10**9),  # polling must not be rate-limited
    "REDIS_URL": "redis://127.0.0.1:6379/13",
    "CACHE_KEY_PREFIX": f"bench-sandboxes-{os.getpid()}",
    "SANDBOX_GPU_BACKEND": "simulated:4xH100-80GB",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(PORTAL_ENV)

# --- The stages of a launch ---------------------------------------------------------------------
#
# Marks are instants on the wall clock; a stage runs from the mark before it to its own. The
# bare hub has no portal API, spawn spec or portal to tell, so those stages are 0 ms there. The
# portal's to_hub can be below 0: the worker's start request may reach the hub before the API's
# answer reaches the client.
STAGES = (
    # stage               portal mark  bare mark    ends when
    ("api", "answered", None),  # the portal's API answered the launch (202)
    ("to_hub", "hub_post", "hub_post"),  # the hub receives the start request
    ("spawn_spec", "spec", None),  # the spawner holds the portal's spawn spec
    ("container_create", "create", "create"),  # the engine created the container
    ("container_start", "start", "start"),  # the engine started it
    ("server_ready", "ready", "ready"),  # the hub's readiness check passed ("took N seconds")
    ("portal_learns", "known", None),  # the portal recorded `running`
    ("client_sees", "seen", "seen"),  # the client's poll saw it
)

_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
_START_POST = re.compile(r"\] 20[12] POST /hub/api/users/([^/]+)/servers/([^/\s]+) .* ([0-9.]+)ms$")
_SPEC = re.compile(r"Starting sandbox \S+ for ([^:\s]+):([^:\s]+): ")
_TOOK = re.compile(r"User ([^:\s]+):(\S+) took ([0-9.]+) seconds to start")


@dataclass
class Launch:
    side: str  # "portal" or "bare"
    server: str  # the hub's server name
    marks: dict[str, float] = field(default_factory=dict)  # "began", "seen", then the trace

    @property
    def seconds(self) -> float:
        return self.marks["seen"] - self.marks["began"]

    def stages_ms(self) -> dict[str, float]:
        """Each stage's milliseconds; they add up to the whole launch."""
        column = 1 if self.side == "portal" else 2
        out, before = {}, self.marks["began"]
        for stage in STAGES:
            mark = stage[column]
            if mark is None:
                out[stage[0]] = 0.0
                continue
            if mark not in self.marks:
                raise SystemExit(f"BENCH trace: no {mark!r} for {self.side} {self.server}")
            out[stage[0]] = (self.marks[mark] - before) * 1000
            before = self.marks[mark]
        return out


def hub_log_marks(log: str) -> dict[str, dict[str, float]]:
    """Server name → the hub's marks of its start: the start POST's arrival (its log line's time
    less the request's duration), the spawner's spawn spec, and readiness."""
    marks: dict[str, dict[str, float]] = defaultdict(dict)
    for text in log.splitlines():
        stamp = _LOG_TIME.match(text)
        if stamp is None:
            continue
        at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()  # noqa: DTZ007
        if found := _START_POST.search(text):
            marks[found[2]]["hub_post"] = at - float(found[3]) / 1000
        elif found := _SPEC.search(text):
            marks[found[2]]["spec"] = at
        elif found := _TOOK.search(text):
            marks[found[2]]["ready"] = at
    return marks


class EngineEvents:
    """The Docker engine's container create and start events while it runs (`docker events`),
    by container name: the engine's own clock on each."""

    def __init__(self):
        self.times: dict[str, dict[str, float]] = defaultdict(dict)
        self.process = subprocess.Popen(  # noqa: S603
            [  # noqa: S607 - the docker CLI on PATH, as `make images` uses it
                "docker",
                "events",
                "--filter=type=container",
                "--filter=event=create",
                "--filter=event=start",
                "--format={{json .}}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for text in self.process.stdout:
            with contextlib.suppress(ValueError, KeyError):
                event = json.loads(text)
                name = event["Actor"]["Attributes"]["name"]
                self.times[name][event["Action"]] = event["timeNano"] / 1e9

    def marks(self, name: str) -> dict[str, float]:
        return dict(self.times.get(name, {}))

    def named(self, prefix: str, suffix: str) -> str:
        """The one container seen whose name has this prefix and suffix ("" if not one)."""
        found = [n for n in list(self.times) if n.startswith(prefix) and n.endswith(suffix)]
        return found[0] if len(found) == 1 else ""

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def seed(count: int) -> list[str]:
    """`count` students with 10 GPU-hours each and an API key each; their keys."""
    from portal.apikeys.services import apikey_create
    from portal.credits.services import account_for_student
    from sandboxes.gpus.services import inventory_sync
    from tests.factories import StudentProfileFactory
    from tests.portal.credits.helpers import lot

    inventory_sync()
    keys = []
    for _ in range(count):
        student = StudentProfileFactory().user
        lot(account_for_student(student), 10 * 3600)
        _, key = apikey_create(
            name="bench",
            scopes=["sandboxes:read", "sandboxes:write", "gpus:read"],
            acting_user=student,
            user=student,
        )
        keys.append(key)
    return keys


def bare_container_env() -> dict[str, str]:
    """What the bare hub needs to start containers as the portal's spawn spec for PROFILE does
    (bare_hub_config.py reads these)."""
    from sandboxes.launcher.models import ResourceProfile

    profile = ResourceProfile.objects.get(slug=PROFILE)
    mib = 1024 * 1024
    return {
        "BARE_IMAGE": IMAGE,
        "BARE_CPU_LIMIT": str(profile.cpu_cores),
        "BARE_MEM_LIMIT_BYTES": str(profile.memory_mib * mib),
        "BARE_SHM_SIZE_BYTES": str(profile.shm_mib * mib),
        "BARE_PIDS_LIMIT": str(profile.pids_limit),
        "BARE_DISK_BYTES": str(profile.disk_mib * mib),
        "BARE_EGRESS": profile.egress,
    }


def worker_start(env: dict, log) -> subprocess.Popen:
    """The worker line of .procfile, so the benchmark measures what `make run` runs."""
    line = next(
        line for line in (ROOT / ".procfile").read_text().splitlines() if line.startswith("worker:")
    )
    command = line.split(":", 1)[1].split()
    process = subprocess.Popen(  # noqa: S603 - the project's own .procfile command
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while b"ready." not in Path(log.name).read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("BENCH worker: did not start:\n" + Path(log.name).read_text()[-3000:])
        time.sleep(0.2)
    return process


# --- One launch and one stop, each side -------------------------------------------------------


def _until(check, timeout: float = 180, poll: float = POLL) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("BENCH: timed out waiting")
        time.sleep(poll)


def portal_launch(api, profile: str, poll: float = POLL) -> tuple[str, Launch]:
    """Launch through the API until it says `running`; the sandbox's id and the launch."""
    began = time.time()
    response = api.post("/sandboxes", json={"image": "python-cpu", "profile": profile})
    if response.status_code != 202:
        raise SystemExit(f"BENCH portal launch: {response.status_code} {response.text}")
    answered = time.time()
    sandbox = response.json()["id"]

    def running() -> bool:
        status = api.get(f"/sandboxes/{sandbox}").json()["status"]
        if status == "failed":
            raise SystemExit(f"BENCH portal launch failed: {api.get(f'/sandboxes/{sandbox}').text}")
        return status == "running"

    _until(running, poll=poll)
    seen = time.time()
    return sandbox, Launch("portal", "", {"began": began, "answered": answered, "seen": seen})


def portal_stop(api, sandbox: str) -> float:
    began = time.monotonic()
    api.post(f"/sandboxes/{sandbox}/stop")

    def released() -> bool:
        if api.get(f"/sandboxes/{sandbox}").json()["status"] != "stopped":
            return False
        return all(row["free"] == row["total"] for row in api.get("/gpus").json()["availability"])

    _until(released)
    return time.monotonic() - began


def bare_launch(hub, user: str, server: str, poll: float = POLL) -> Launch:
    path = f"/users/{user}/servers/{server}"
    began = time.time()
    response = hub.post(path, json={})
    if response.status_code not in (201, 202):
        raise SystemExit(f"BENCH bare launch: {response.status_code} {response.text}")
    _until(lambda: hub.get(path).json().get("ready"), poll=poll)
    return Launch("bare", server, {"began": began, "seen": time.time()})


def bare_stop(hub, user: str, server: str) -> float:
    path = f"/users/{user}/servers/{server}"
    began = time.monotonic()
    hub.request("DELETE", path, json={"remove": True})
    _until(lambda: hub.get(path).status_code == 404)
    return time.monotonic() - began


# --- The same container on both sides ---------------------------------------------------------

# What the two containers must share (docker inspect): the image, how the server runs, the
# limits and hardening, the home volume, the network.
_COMPARED = {
    "image": lambda c: c["Config"]["Image"],
    "command": lambda c: c["Config"]["Cmd"],
    "user": lambda c: c["Config"]["User"],
    "cpu quota": lambda c: (c["HostConfig"]["CpuQuota"], c["HostConfig"]["CpuPeriod"]),
    "memory": lambda c: (c["HostConfig"]["Memory"], c["HostConfig"]["MemorySwap"]),
    "shm": lambda c: c["HostConfig"]["ShmSize"],
    "pids": lambda c: c["HostConfig"]["PidsLimit"],
    "capabilities": lambda c: c["HostConfig"].get("CapDrop"),
    "security options": lambda c: c["HostConfig"].get("SecurityOpt"),
    "storage options": lambda c: c["HostConfig"].get("StorageOpt"),
    "dns": lambda c: c["HostConfig"].get("Dns"),
    "network": lambda c: sorted(c["NetworkSettings"]["Networks"]),
    "mounts": lambda c: [(m["Type"], m["Destination"]) for m in c["Mounts"]],
    "server settings": lambda c: sorted(
        e
        for e in c["Config"]["Env"]
        if e.startswith(("JUPYTERHUB_DEFAULT_URL=", "JUPYTERHUB_DISABLE_USER_CONFIG="))
    ),
}


def container_options(suffix: str) -> dict:
    import docker

    engine = docker.from_env()
    try:
        (container,) = [c for c in engine.containers.list() if c.name.endswith(suffix)]
        return {name: read(container.attrs) for name, read in _COMPARED.items()}
    finally:
        engine.close()


def same_containers(portal_suffix: str, bare_suffix: str) -> None:
    portal, bare = container_options(portal_suffix), container_options(bare_suffix)
    differ = {name: (portal[name], bare[name]) for name in portal if portal[name] != bare[name]}
    if differ:
        raise SystemExit(f"BENCH fairness: the containers differ (portal, bare): {differ}")
    say("BENCH fairness: both sides' containers have the same " + ", ".join(_COMPARED))


# --- Main -------------------------------------------------------------------------------------


def portal_server(sandbox: str) -> tuple[str, str, float | None]:
    """(hub user, server name, when the portal recorded `running`) of a sandbox."""
    from sandboxes.launcher.models import Sandbox

    row = Sandbox.objects.select_related("user").get(public_id=sandbox)
    running_at = row.running_at.timestamp() if row.running_at else None
    return row.user.hub_username, row.server_name, running_at


def traced(launches: list[Launch], hub_logs: dict[str, str], engine: EngineEvents) -> None:
    """Add each launch's marks from the hubs' logs and the engine's events."""
    marks = {side: hub_log_marks(log) for side, log in hub_logs.items()}
    for launch in launches:
        launch.marks.update(marks[launch.side].get(launch.server, {}))
        if launch.side == "portal":  # nac-<escaped hub user>--<server>
            name = engine.named("nac-", f"--{launch.server}")
        else:
            name = f"jupyter-{BARE_USER}--{launch.server}"
        launch.marks.update(engine.marks(name))


def rounds(apis, hub, engine: EngineEvents) -> dict:
    for n in range(max(CONCURRENT, 1)):
        hub.post(f"/users/bench{n}")
    # Warm-up, one each (page cache, the hub's first spawn, the worker's first task), with both
    # containers up at once to compare them.
    sandbox, _ = portal_launch(apis[0], PROFILE)
    _user, portal_name, _ = portal_server(sandbox)
    bare_launch(hub, BARE_USER, "warm")
    same_containers(f"--{portal_name}", f"{BARE_USER}--warm")
    portal_stop(apis[0], sandbox)
    bare_stop(hub, BARE_USER, "warm")

    launches: list[Launch] = []
    portal_down, bare_down = [], []
    for n in range(ROUNDS):
        sides = ["portal", "bare"] if n % 2 == 0 else ["bare", "portal"]
        for side in sides:
            if side == "portal":
                sandbox, launch = portal_launch(apis[0], PROFILE)
                _user, launch.server, known = portal_server(sandbox)
                if known is not None:
                    launch.marks["known"] = known
                launches.append(launch)
                portal_down.append(portal_stop(apis[0], sandbox))
            else:
                launches.append(bare_launch(hub, BARE_USER, f"r{n}"))
                bare_down.append(bare_stop(hub, BARE_USER, f"r{n}"))
    return {"launches": launches, "portal_down": portal_down, "bare_down": bare_down}


def concurrent(apis, hub) -> dict[str, list[float]]:
    """Ten people launch at the same moment, each side in turn; the seconds each waited."""
    out = {}
    for side in ("portal", "bare"):
        times: dict[int, float] = {}
        errors: dict[int, str] = {}
        started = threading.Barrier(CONCURRENT)

        def one(n: int, side=side, times=times, errors=errors, started=started) -> None:
            started.wait()
            try:
                if side == "portal":
                    times[n] = portal_launch(apis[n], "cpu-small", POLL_CONCURRENT)[1].seconds
                else:
                    times[n] = bare_launch(hub, f"bench{n}", "many", POLL_CONCURRENT).seconds
            except (SystemExit, Exception) as exc:  # noqa: BLE001 - reported below, all of them
                errors[n] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if side == "portal":
            for n, api in enumerate(apis):
                for sandbox in api.get("/sandboxes").json()["results"]:
                    if sandbox["status"] in ("starting", "running"):
                        portal_stop(apis[n], sandbox["id"])
        else:
            for n in range(CONCURRENT):
                bare_stop(hub, f"bench{n}", "many")
        if errors:
            raise SystemExit(
                f"BENCH concurrent {side}: {len(errors)} of {CONCURRENT} failed: {errors}"
            )
        out[side] = list(times.values())
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def line(name: str, value: float, baseline: float) -> str:
    return f"BENCH {name}: {value:.2f} s (baseline {baseline:.2f} s, ratio {value / baseline:.2f})"


def report_launches(launches: list[Launch]) -> bool:
    """Print every round, the stages' medians and the headline; whether the target is met."""
    portal = [launch for launch in launches if launch.side == "portal"]
    bare = [launch for launch in launches if launch.side == "bare"]
    for n, (p, b) in enumerate(zip(portal, bare, strict=True)):
        for launch in (p, b):
            stages = launch.stages_ms()
            say(
                f"BENCH round {n} {launch.side}: {launch.seconds:.2f} s = "
                + " + ".join(f"{stage} {ms:.0f}" for stage, ms in stages.items() if ms)
                + " ms"
            )
    for stage, *_ in STAGES:
        mine = statistics.median(launch.stages_ms()[stage] for launch in portal)
        theirs = statistics.median(launch.stages_ms()[stage] for launch in bare)
        ratio = f"{mine / theirs:.2f}" if theirs else "inf"
        say(f"BENCH launch_stage_{stage}: {mine:.0f} ms (baseline {theirs:.0f} ms, ratio {ratio})")
    # Everything but the server's own boot: what the portal adds, without the spawner's quicker
    # notice of a booted server (its 50 ms checks against the bare hub's backing-off ones).
    mine = statistics.median(
        launch.seconds * 1000 - launch.stages_ms()["server_ready"] for launch in portal
    )
    theirs = statistics.median(
        launch.seconds * 1000 - launch.stages_ms()["server_ready"] for launch in bare
    )
    say(
        f"BENCH sandbox_launch_outside_boot: {mine:.0f} ms "
        f"(baseline {theirs:.0f} ms, ratio {mine / theirs:.2f})"
    )
    up = statistics.median(launch.seconds for launch in portal)
    up_bare = statistics.median(launch.seconds for launch in bare)
    say(line("sandbox_launch", up, up_bare))
    paired = statistics.median(p.seconds / b.seconds for p, b in zip(portal, bare, strict=True))
    met = up / up_bare <= TARGET
    say(
        f"BENCH targets: launch ratio <= {TARGET} {'MET' if met else 'NOT MET'} (median of "
        f"{len(portal)} interleaved rounds; median of each round's own ratio {paired:.2f}; "
        f"cpus={os.cpu_count()}); portal "
        + ", ".join(f"{launch.seconds:.2f}" for launch in portal)
        + " s; bare "
        + ", ".join(f"{launch.seconds:.2f}" for launch in bare)
        + " s"
    )
    return met


def main() -> int:
    import httpx

    from tests.sandboxes.hub import running_hub

    say(f"BENCH setup: database {DATABASE}, image {IMAGE}, {ROUNDS} rounds, {CONCURRENT} at once")
    common.database_create(SERVER_URL, DATABASE)
    processes = []
    logs = [tempfile.NamedTemporaryFile(mode="w+", suffix=".log") for _ in range(2)]  # noqa: SIM115
    engine = EngineEvents()
    volumes: list[str] = []
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        keys = seed(max(CONCURRENT, 1))
        bare_env = bare_container_env()
        connections.close_all()

        port = common.free_port()
        portal = f"http://127.0.0.1:{port}"
        secret = secrets.token_urlsafe(32)
        bare_volumes = f"bench-home-{secrets.token_hex(4)}-"
        with (
            running_hub(portal_internal_url=portal, env={"HUB_SPAWN_SECRET": secret}) as hub,
            running_hub(
                portal_internal_url="http://127.0.0.1:1",
                config=ROOT / "tests" / "benchmarks" / "bare_hub_config.py",
                env={**bare_env, "BARE_VOLUME_PREFIX": bare_volumes},
            ) as bare,
        ):
            env = {
                **os.environ,
                "HUB_API_URL": hub.api_url,
                "HUB_API_TOKEN": hub.api_token,
                "HUB_PUBLIC_URL": hub.public_url,
                "HUB_SPAWN_SECRET": secret,
            }
            processes.append(common.uvicorn_start(port, env, logs[0]))
            common.server_wait(portal, processes[-1])
            processes.append(worker_start(env, logs[1]))
            apis = [
                httpx.Client(
                    base_url=f"{portal}/api/v1",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=30,
                )
                for key in keys
            ]
            try:
                with bare.client() as bare_api:
                    result = rounds(apis, bare_api, engine)
                    traced(result["launches"], {"portal": hub.log(), "bare": bare.log()}, engine)
                    met = report_launches(result["launches"])
                    say(
                        line(
                            "sandbox_stop_to_released",
                            statistics.median(result["portal_down"]),
                            statistics.median(result["bare_down"]),
                        )
                    )
                    many = concurrent(apis, bare_api) if CONCURRENT else {}
            finally:
                from sandboxes.launcher.models import Sandbox
                from sandboxes.launcher.selectors import home_volume

                volumes = [bare_volumes + f"bench{n}" for n in range(max(CONCURRENT, 1))]
                volumes += sorted({home_volume(s.user) for s in Sandbox.objects.all()})
                connections.close_all()
                for api in apis:
                    api.close()
        if many:
            name = f"sandbox_launch_{CONCURRENT}_concurrent"
            say(
                line(
                    f"{name}_p50",
                    statistics.median(many["portal"]),
                    statistics.median(many["bare"]),
                )
            )
            say(line(f"{name}_p95", p95(many["portal"]), p95(many["bare"])))
        return 2 if os.environ.get("BENCH_STRICT") == "1" and not met else 0
    except BaseException:
        for log in logs:
            log.seek(0)
            say("BENCH log tail:\n" + log.read()[-3000:])
        raise
    finally:
        for process in processes:
            with contextlib.suppress(Exception):
                common.server_stop(process)
        engine.close()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        common.database_drop(SERVER_URL, DATABASE)
        volumes_remove(volumes)


def volumes_remove(names: list[str]) -> None:
    """The home volumes this run made (only those: other runs may have their own)."""
    import docker

    engine = docker.from_env()
    try:
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):
                engine.volumes.get(name).remove()
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
