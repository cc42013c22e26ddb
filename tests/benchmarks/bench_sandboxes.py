"""Sandbox launch latency through the portal against a bare hub: `make bench`.

Everything real, on this machine: PostgreSQL (a database of its own, BENCH_SANDBOX_DATABASE,
default portal_bench_sandboxes, created, migrated and dropped here), Redis (database 13), the
portal under uvicorn, a Celery worker as `make run` starts it (.procfile), the portal's
JupyterHub with its spawner, and Docker running nac/python-cpu:2026.11 (`make images`).

The baseline, measured in the same run on the same machine: a bare JupyterHub + DockerSpawner
(tests/benchmarks/bare_hub_config.py: no portal, no sign-in, no spawn check) starting the same
image on the same docker network. Launches alternate between the two, BENCH_SANDBOX_ROUNDS
times each (default 5) after one warm-up each, and each side is timed the same way: from the
request to the moment a poll (every 100 ms) sees the server ready (portal: the API says
`running`; bare hub: its REST API says `ready`). It prints

  BENCH sandbox_launch_to_ready: <median s> s (baseline <median s> s, ratio <r>)
  BENCH sandbox_stop_to_released: ...   (portal: stopped and its GPU free; hub: server gone)
  BENCH sandbox_launch_10_concurrent_p50 / _p95: ...   (10 people launch at the same moment)

and the target (launch ratio <= 1.10). Exit status 2 when BENCH_STRICT=1 and it is missed.
"""

import contextlib
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_SANDBOX_DATABASE", "portal_bench_sandboxes")
ROUNDS = int(os.environ.get("BENCH_SANDBOX_ROUNDS", "5"))
CONCURRENT = 10
IMAGE = "nac/python-cpu:2026.11"
TARGET = 1.10
POLL = 0.1
# Ten clients polling at 10 Hz are themselves a load on a 2-core machine (the portal answers
# each poll through Django and PostgreSQL): the concurrent phase polls each side at 1 Hz.
POLL_CONCURRENT = float(os.environ.get("BENCH_SANDBOX_POLL_CONCURRENT", "1.0"))

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


def portal_launch(api, profile: str, poll: float = POLL) -> tuple[str, float]:
    began = time.monotonic()
    response = api.post("/sandboxes", json={"image": "python-cpu", "profile": profile})
    if response.status_code != 202:
        raise SystemExit(f"BENCH portal launch: {response.status_code} {response.text}")
    sandbox = response.json()["id"]

    def running() -> bool:
        status = api.get(f"/sandboxes/{sandbox}").json()["status"]
        if status == "failed":
            raise SystemExit(f"BENCH portal launch failed: {api.get(f'/sandboxes/{sandbox}').text}")
        return status == "running"

    _until(running, poll=poll)
    return sandbox, time.monotonic() - began


def portal_stop(api, sandbox: str) -> float:
    began = time.monotonic()
    api.post(f"/sandboxes/{sandbox}/stop")

    def released() -> bool:
        if api.get(f"/sandboxes/{sandbox}").json()["status"] != "stopped":
            return False
        return all(row["free"] == row["total"] for row in api.get("/gpus").json()["availability"])

    _until(released)
    return time.monotonic() - began


def bare_launch(hub, user: str, server: str, poll: float = POLL) -> float:
    path = f"/users/{user}/servers/{server}"
    began = time.monotonic()
    response = hub.post(path, json={})
    if response.status_code not in (201, 202):
        raise SystemExit(f"BENCH bare launch: {response.status_code} {response.text}")
    _until(lambda: hub.get(path).json().get("ready"), poll=poll)
    return time.monotonic() - began


def bare_stop(hub, user: str, server: str) -> float:
    path = f"/users/{user}/servers/{server}"
    began = time.monotonic()
    hub.request("DELETE", path, json={"remove": True})
    _until(lambda: hub.get(path).status_code == 404)
    return time.monotonic() - began


def spawn_seconds(log: str) -> list[float]:
    return [float(m) for m in re.findall(r"took ([0-9.]+) seconds to start", log)]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def line(name: str, value: float, baseline: float) -> str:
    return f"BENCH {name}: {value:.2f} s (baseline {baseline:.2f} s, ratio {value / baseline:.2f})"


# --- Main -------------------------------------------------------------------------------------


def measure(apis, hub) -> dict:
    for n in range(CONCURRENT):
        hub.post(f"/users/bench{n}")
    # Warm-up, one each (page cache, the hub's first spawn, the worker's first task).
    sandbox, _ = portal_launch(apis[0], "gpu-1")
    portal_stop(apis[0], sandbox)
    bare_launch(hub, "bench0", "warm")
    bare_stop(hub, "bench0", "warm")

    portal_up, portal_down, bare_up, bare_down = [], [], [], []
    for n in range(ROUNDS):
        sides = ["portal", "bare"] if n % 2 == 0 else ["bare", "portal"]
        for side in sides:
            if side == "portal":
                sandbox, seconds = portal_launch(apis[0], "gpu-1")
                portal_up.append(seconds)
                portal_down.append(portal_stop(apis[0], sandbox))
            else:
                bare_up.append(bare_launch(hub, "bench0", f"r{n}"))
                bare_down.append(bare_stop(hub, "bench0", f"r{n}"))

    concurrent = {}
    for side in ("portal", "bare"):
        times: dict[int, float] = {}
        started = threading.Barrier(CONCURRENT)

        def one(n: int, side=side, times=times, started=started) -> None:
            started.wait()
            if side == "portal":
                times[n] = portal_launch(apis[n], "cpu-small", POLL_CONCURRENT)[1]
            else:
                times[n] = bare_launch(hub, f"bench{n}", "many", POLL_CONCURRENT)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(times) != CONCURRENT:
            raise SystemExit(f"BENCH concurrent {side}: only {len(times)} of {CONCURRENT} started")
        concurrent[side] = list(times.values())
        if side == "portal":
            for n, api in enumerate(apis):
                for sandbox in api.get("/sandboxes").json()["results"]:
                    if sandbox["status"] == "running":
                        portal_stop(apis[n], sandbox["id"])
        else:
            for n in range(CONCURRENT):
                bare_stop(hub, f"bench{n}", "many")
    return {
        "portal_up": portal_up,
        "portal_down": portal_down,
        "bare_up": bare_up,
        "bare_down": bare_down,
        "concurrent": concurrent,
    }


def main() -> int:
    import httpx

    from tests.sandboxes.hub import running_hub

    say(f"BENCH setup: database {DATABASE}, image {IMAGE}, {ROUNDS} rounds, {CONCURRENT} at once")
    common.database_create(SERVER_URL, DATABASE)
    processes = []
    logs = [tempfile.NamedTemporaryFile(mode="w+", suffix=".log") for _ in range(2)]  # noqa: SIM115
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        keys = seed(CONCURRENT)
        connections.close_all()

        port = common.free_port()
        portal = f"http://127.0.0.1:{port}"
        secret = secrets.token_urlsafe(32)
        with (
            running_hub(portal_internal_url=portal, env={"HUB_SPAWN_SECRET": secret}) as hub,
            running_hub(
                portal_internal_url="http://127.0.0.1:1",
                config=ROOT / "tests" / "benchmarks" / "bare_hub_config.py",
                env={"BARE_IMAGE": IMAGE},
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
            with bare.client() as bare_api:
                result = measure(apis, bare_api)
            # Where the time goes: the hubs' own spawn durations ("took N seconds to start").
            result["hub_spawns"] = {
                "portal": spawn_seconds(hub.log()),
                "bare": spawn_seconds(bare.log()),
            }
            for api in apis:
                api.close()
        up = statistics.median(result["portal_up"])
        up_bare = statistics.median(result["bare_up"])
        say(line("sandbox_launch_to_ready", up, up_bare))
        say(
            line(
                "sandbox_stop_to_released",
                statistics.median(result["portal_down"]),
                statistics.median(result["bare_down"]),
            )
        )
        many, many_bare = result["concurrent"]["portal"], result["concurrent"]["bare"]
        say(
            line(
                "sandbox_launch_10_concurrent_p50",
                statistics.median(many),
                statistics.median(many_bare),
            )
        )
        say(line("sandbox_launch_10_concurrent_p95", p95(many), p95(many_bare)))
        spawns = result["hub_spawns"]
        say(
            "BENCH hub spawn seconds (each hub's own log; the last 10 ran at once): portal "
            + ", ".join(f"{s:.1f}" for s in spawns["portal"])
            + "; bare "
            + ", ".join(f"{s:.1f}" for s in spawns["bare"])
        )
        met = up / up_bare <= TARGET
        say(
            f"BENCH targets: launch-to-ready ratio <= {TARGET} {'MET' if met else 'NOT MET'}; "
            f"rounds={ROUNDS} cpus={os.cpu_count()}; portal launches "
            + ", ".join(f"{s:.2f}" for s in result["portal_up"])
            + "; bare "
            + ", ".join(f"{s:.2f}" for s in result["bare_up"])
        )
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
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        common.database_drop(SERVER_URL, DATABASE)


if __name__ == "__main__":
    sys.exit(main())
