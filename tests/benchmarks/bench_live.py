"""Live messages from a metering tick to WebSocket clients, through Redis and the ASGI server:
`make bench`.

The portal's ASGI application (portal.asgi:application) runs under uvicorn, one process, as
`make run` starts it, against a PostgreSQL database of its own (BENCH_LIVE_DATABASE, default
portal_bench_live, created, migrated and dropped here) and the real Redis channel layer (Redis
database 11, a channel prefix of this run's own). People with an API key each (scope
usage:read) open /ws/live/ with the `websockets` library, `Authorization: Bearer <key>` and no
Origin, from a separate client process (BENCH_LIVE_CLIENT_PROCESSES, default 1). This process
plays the metering tick: a tick is ONE `broadcast.send_after_commit` call with one
usage.sample-shaped message per person's group, stamped with the time the tick hands them over.
Each client counts what it receives, by tick, and the time from the stamp to its arrival.

1. Sample-to-browser latency: BENCH_LIVE_CLIENTS (default 50) sockets, BENCH_LIVE_SAMPLES
   ticks (default 200) at BENCH_LIVE_HZ (default 2 a second: 100 messages a second into the
   server, 20 times what 50 sandboxes' metering sends; at 4 to 10 a second the server's
   channel-layer reads fall behind on this 2-core machine and latency becomes queueing).
   Baseline: the same ticks to the same groups, received by the client process straight from
   the channel layer (group_add and receive on channels of its own), without the ASGI server.

     BENCH live_sample_latency_p50: <ms> ms (baseline <ms> ms, ratio <r>)
     BENCH live_sample_latency_p95: <ms> ms (baseline <ms> ms, ratio <r>)      target <= 250 ms

2. Many clients: BENCH_LIVE_MANY (default 1,000) sockets on the one server process, one tick a
   second for BENCH_LIVE_SECONDS (default 20): each client gets one message a second, far
   inside the consumer's outbound cap (a burst of 200, then 100 a second). Baseline: the same
   with BENCH_LIVE_FEW (default 100) sockets.

     BENCH live_1000_clients_p95: <s> s (baseline <100 clients p95> s, ratio <r>)   target <= 1 s
     BENCH live_1000_clients_delivered: <pct> % (baseline <100 clients pct> %, ratio <r>)

After the last tick the clients are asked how many they have received until they have them all
or BENCH_LIVE_DRAIN_SECONDS (default 5) pass without one more arriving: a late message counts in
the latency, a message that never comes is not delivered. Every message not delivered is
accounted for: announced to its client by a `live.dropped` (the consumer's cap), or lost without
the client being told: refused by channels-redis as over capacity (it only logs that, at INFO,
in the sending process: counted here) or lost otherwise (e.g. expired in Redis after 60 s).
It also prints how long each tick's send took in this process, how long the sockets took to
open, and the CPU each side used while the ticks went (server, Redis, clients, this sender).
Exit status 1 when a message was lost without its client being told, or a socket could not
open or closed early; 2 when
BENCH_STRICT=1 and a target is missed. BENCH_LIVE_SETTINGS sets the settings module of the
server and the sender (default portal.settings.local), to try a change to them;
BENCH_LIVE_PHASES (default "latency,many") which parts run.
"""

import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_LIVE_DATABASE", "portal_bench_live")
CLIENTS = int(os.environ.get("BENCH_LIVE_CLIENTS", "50"))
SAMPLES = int(os.environ.get("BENCH_LIVE_SAMPLES", "200"))
HZ = float(os.environ.get("BENCH_LIVE_HZ", "2"))
MANY = int(os.environ.get("BENCH_LIVE_MANY", "1000"))
FEW = int(os.environ.get("BENCH_LIVE_FEW", "100"))
SECONDS = int(os.environ.get("BENCH_LIVE_SECONDS", "20"))
DRAIN_SECONDS = float(os.environ.get("BENCH_LIVE_DRAIN_SECONDS", "5"))
CLIENT_PROCESSES = int(os.environ.get("BENCH_LIVE_CLIENT_PROCESSES", "1"))
PHASES = os.environ.get("BENCH_LIVE_PHASES", "latency,many").split(",")
WARMUP_TICKS = 2
CONNECTS_AT_ONCE = 32
LATENCY_TARGET, MANY_TARGET = 0.250, 1.0
HOST = "127.0.0.1"

SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_LIVE_SETTINGS", "portal.settings.local"),
    "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
    "DEBUG": "False",
    "ALLOWED_HOSTS": HOST,
    "SECRET_KEY": os.environ.get("BENCH_LIVE_SECRET_KEY") or secrets.token_urlsafe(64),
    "API_KEY_PEPPER": os.environ.get("BENCH_LIVE_PEPPER") or secrets.token_urlsafe(32),
    "REDIS_URL": os.environ.get("BENCH_LIVE_REDIS_URL", "redis://127.0.0.1:6379/11"),
    "CACHE_KEY_PREFIX": f"bench-live-{os.getpid()}",
    "CHANNELS_PREFIX": f"bench-live-{os.getpid()}",
    "LOG_LEVEL": "WARNING",
}


# --- People with keys -----------------------------------------------------------------------


def seed(count: int) -> list[tuple[int, str]]:
    """`count` people, each with a personal API key that may read usage: (user pk, full key).
    Bulk inserts; the key is made and hashed as `apikey_create` makes it."""
    import datetime as dt

    from django.utils import timezone

    from portal.apikeys.models import ApiKey
    from portal.apikeys.tokens import key_generate, secret_hash
    from portal.users.models import User

    users = User.objects.bulk_create(
        [
            User(
                email=f"live{i}@example.pk",
                name=f"Live Person {i}",
                hub_username=f"live-{i:05d}",
                password="!bench",  # unusable: nobody signs in as these
            )
            for i in range(count)
        ]
    )
    keys, rows = [], []
    expires = timezone.now() + dt.timedelta(days=30)
    for user in users:
        full_key, key_id, secret = key_generate()
        keys.append((user.pk, full_key))
        rows.append(
            ApiKey(
                key_id=key_id,
                name="bench",
                user=user,
                created_by=user,
                scopes=["usage:read"],
                secret_hash=secret_hash(secret),
                expires_at=expires,
            )
        )
    ApiKey.objects.bulk_create(rows)
    return keys


# --- The client process ---------------------------------------------------------------------
# `bench_live.py --client` reads one JSON line (what to open), opens everything, prints
# "READY <opened> <failed> <seconds>", answers "COUNT" with "COUNT <received>" until it reads
# "STOP" on stdin, then closes, and prints
# "RESULT <json>". Two modes: "ws" (WebSocket clients of the ASGI server) and "layer" (the
# baseline: channels of its own on the channel layer, in the groups the server's consumers
# would join).


class Tally:
    """What one client received."""

    def __init__(self):
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.duplicates = 0
        self.dropped_notices = 0
        self.closed: int | None = None

    def message(self, data: dict, arrived: float) -> None:
        kind = data.get("type")
        if kind == "live.dropped":
            self.dropped_notices += data.get("dropped", 0)
            return
        if kind != "usage.sample" or data.get("bench_warmup"):
            return
        seq = data["bench_seq"]
        if seq in self.seen:
            self.duplicates += 1
            return
        self.seen.add(seq)
        self.latencies.append(arrived - data["bench_sent_at"])


async def _ws_client(url: str, key: str, tally: Tally, opened: asyncio.Event, gate) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with gate:
        ws = await connect(
            url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=120
        )
    opened.set()
    try:
        async for raw in ws:
            tally.message(json.loads(raw), time.time())
    except ConnectionClosed:
        pass
    finally:
        tally.closed = ws.close_code


async def _layer_client(layer, group: str, tally: Tally, opened: asyncio.Event) -> None:
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    opened.set()
    try:
        while True:
            event = await layer.receive(channel)
            tally.message(event["message"], time.time())
    finally:
        await layer.group_discard(group, channel)


async def client_main(config: dict) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    loop = asyncio.get_running_loop()
    users = config["users"]
    tallies = [Tally() for _ in users]
    events = [asyncio.Event() for _ in users]
    layer = None
    started = time.monotonic()
    if config["mode"] == "ws":
        gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
        tasks = [
            asyncio.ensure_future(_ws_client(config["url"], key, tally, event, gate))
            for (_uid, key), tally, event in zip(users, tallies, events, strict=True)
        ]
    else:
        import importlib

        module, name = config["layer"]["BACKEND"].rsplit(".", 1)
        layer = getattr(importlib.import_module(module), name)(**config["layer"]["CONFIG"])
        tasks = [
            asyncio.ensure_future(_layer_client(layer, f"live.user.{uid}", tally, event))
            for (uid, _key), tally, event in zip(users, tallies, events, strict=True)
        ]
    # Every socket open (or failed): a failed one's task is done without its event set.
    while True:
        done = sum(e.is_set() or t.done() for e, t in zip(events, tasks, strict=True))
        if done == len(tasks):
            break
        await asyncio.sleep(0.05)
    failed = [t for t, e in zip(tasks, events, strict=True) if not e.is_set()]
    errors = sorted({repr(t.exception())[:200] for t in failed if t.done() and t.exception()})
    say(
        f"READY {len(tasks) - len(failed)} {len(failed)} {time.monotonic() - started:.2f} "
        + json.dumps(errors)
    )
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "COUNT":
        say(f"COUNT {sum(len(t.seen) for t in tallies)}")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = [
        {
            "seen": sorted(t.seen),
            "latencies": [round(x, 5) for x in t.latencies],
            "duplicates": t.duplicates,
            "dropped_notices": t.dropped_notices,
            "closed": t.closed,
        }
        for t in tallies
    ]
    say("RESULT " + json.dumps(result))


def client_process_main() -> None:
    config = json.loads(sys.stdin.readline())
    try:
        import uvloop

        uvloop.run(client_main(config))
    except ImportError:
        asyncio.run(client_main(config))


# --- The sender: ticks, in this process -----------------------------------------------------


class OverCapacity(logging.Handler):
    """Counts channels-redis's "N of M channels over capacity in group G" (its only trace of a
    message it did not deliver to a channel: it logs at INFO, in the sending process)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.channels = 0
        self.events = 0

    def reset(self) -> None:
        """From here on (the warm-up ticks' losses are not the measurement's)."""
        self.channels = self.events = 0

    def emit(self, record) -> None:
        if "over capacity" in record.msg:
            self.events += 1
            self.channels += int(record.args[0])


def sample_message(seq: int, sent_at: float, warmup: bool) -> dict:
    """A usage.sample as the tick sends it (one GPU), with the tick's number and stamp."""
    return {
        "type": "usage.sample",
        "sandbox": "0b6f3c1e-8a0d-4f5e-9a51-5d8f4c2e7a10",
        "user": "Bench Person",
        "at": "2026-01-01T00:00:00Z",
        "simulated": True,
        "gpu_util_pct": 42.0,
        "gpu_memory_used_mib": 1700,
        "gpu_memory_total_mib": 81559,
        "gpu_power_w": 330.5,
        "gpu_temperature_c": 50,
        "cpu_pct": 97.5,
        "memory_used_mib": 2048,
        "memory_limit_mib": 8192,
        "charged_credit_seconds": 600 + seq,
        "gpus": [
            {
                "uuid": "GPU-1f0e5e5c-0000-4000-8000-000000000000",
                "index": 0,
                "util_pct": 42.0,
                "memory_used_mib": 1700,
                "memory_total_mib": 81559,
                "power_w": 330.5,
                "temperature_c": 50,
            }
        ],
        "bench_seq": seq,
        "bench_sent_at": sent_at,
        "bench_warmup": warmup,
    }


def send_ticks(user_ids: list[int], count: int, hz: float, measuring=None) -> list[float]:
    """`count` ticks at `hz` (after WARMUP_TICKS), each ONE send_after_commit with a message for
    every person's group; how long each send took in this process."""
    from sandboxes.live.broadcast import send_after_commit, user_group

    groups = [user_group(uid) for uid in user_ids]
    for seq in range(-WARMUP_TICKS, 0):
        message = sample_message(seq, time.time(), warmup=True)
        send_after_commit([(group, message) for group in groups])
        time.sleep(0.2)
    time.sleep(0.5)
    if measuring is not None:
        measuring()
    durations = []
    start = time.monotonic()
    for seq in range(count):
        delay = start + seq / hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        message = sample_message(seq, time.time(), warmup=False)
        # One message per group, as the tick builds them (send_after_commit copies each).
        send_after_commit([(group, message) for group in groups])
        durations.append(time.perf_counter() - began)
    return durations


# --- A phase: clients open, ticks go, clients tell what they got ----------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds() -> float:
    import redis

    info = redis.Redis.from_url(SERVER_ENV["REDIS_URL"]).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class CpuWatch:
    """CPU used by each side while the ticks go, as a share of one core."""

    def __init__(self, server_pid: int, client_pids: list[int]):
        self.pids = {"server": [server_pid], "clients": client_pids}

    def _snapshot(self) -> dict:
        snapshot = {side: sum(cpu_seconds(p) for p in pids) for side, pids in self.pids.items()}
        snapshot["redis"] = redis_cpu_seconds()
        snapshot["sender"] = time.process_time()
        snapshot["wall"] = time.monotonic()
        return snapshot

    def __enter__(self):
        self.before = self._snapshot()
        return self

    def __exit__(self, *exc):
        after = self._snapshot()
        wall = after["wall"] - self.before["wall"]
        self.shares = {
            side: (after[side] - self.before[side]) / wall
            for side in ("server", "redis", "clients", "sender")
        }


def drain(processes, expected: int) -> None:
    """Until every message has come, or none has come for DRAIN_SECONDS."""
    last, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < DRAIN_SECONDS:
        received = 0
        for process in processes:
            process.stdin.write("COUNT\n")
            process.stdin.flush()
            received += int(process.stdout.readline().split()[1])
        if received >= expected:
            return
        if received != last:
            last, last_change = received, time.monotonic()
        time.sleep(0.25)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1] if ordered else float("nan")


def phase(
    name: str, mode: str, users, ticks: int, hz: float, url: str, layer_config, server_pid: int
) -> dict:
    over = OverCapacity()
    logger = logging.getLogger("channels_redis.core")
    logger.addHandler(over)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    processes = []
    try:
        share = math.ceil(len(users) / CLIENT_PROCESSES)
        for k in range(CLIENT_PROCESSES):
            part = users[k * share : (k + 1) * share]
            if not part:
                continue
            process = subprocess.Popen(  # noqa: S603 - this script, our interpreter
                [sys.executable, __file__, "--client"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            config = {"mode": mode, "url": url, "layer": layer_config, "users": part}
            process.stdin.write(json.dumps(config) + "\n")
            process.stdin.flush()
            processes.append(process)
        opened = failed = 0
        open_seconds = 0.0
        errors = []
        for process in processes:
            line = process.stdout.readline().split(" ", 4)
            if not line or line[0] != "READY":
                raise SystemExit(f"BENCH {name}: a client process did not start: {line}")
            opened, failed = opened + int(line[1]), failed + int(line[2])
            open_seconds = max(open_seconds, float(line[3]))
            errors += json.loads(line[4])
        with CpuWatch(server_pid, [p.pid for p in processes]) as cpu:
            durations = send_ticks([uid for uid, _key in users], ticks, hz, over.reset)
        drain(processes, len(users) * ticks)
        tallies = []
        for process in processes:
            process.stdin.write("STOP\n")
            process.stdin.flush()
        for process in processes:
            for line in process.stdout:
                if line.startswith("RESULT "):
                    tallies += json.loads(line[len("RESULT ") :])
                    break
            process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        logger.removeHandler(over)
    latencies = [x for t in tallies for x in t["latencies"]]
    sent = ticks * len(users)
    received = sum(len(t["seen"]) for t in tallies)
    notices = sum(t["dropped_notices"] for t in tallies)
    lost = sent - received
    return {
        "name": name,
        "clients": len(users),
        "opened": opened,
        "failed": failed,
        "errors": errors,
        "open_seconds": open_seconds,
        "sent": sent,
        "received": received,
        "delivered_pct": 100 * received / sent if sent else 0.0,
        "duplicates": sum(t["duplicates"] for t in tallies),
        "dropped_notices": notices,
        "over_capacity": over.channels,
        "untold": max(0, lost - notices),
        "otherwise": max(0, lost - notices - over.channels),
        "closed_early": sum(1 for t in tallies if t["closed"] not in (None, 1000, 1001)),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": p95(latencies),
        "max": max(latencies, default=float("nan")),
        "send_median": statistics.median(durations),
        "send_max": max(durations),
        "cpu": cpu.shares,
    }


def detail(r: dict) -> str:
    return (
        f"BENCH {r['name']}: {r['opened']}/{r['clients']} opened in {r['open_seconds']:.1f} s"
        + (f" (failures: {'; '.join(r['errors'])[:300]})" if r["failed"] else "")
        + f"; {r['received']}/{r['sent']} received ({r['delivered_pct']:.2f} %), "
        f"p50 {1000 * r['p50']:.1f} ms, p95 {1000 * r['p95']:.1f} ms, max {1000 * r['max']:.1f} ms;"
        f" not delivered: {r['sent'] - r['received']} = {r['dropped_notices']} announced "
        f"(live.dropped) + {r['untold']} lost untold ({r['over_capacity']} over channels-redis "
        f"capacity, {r['otherwise']} otherwise); {r['duplicates']} duplicates; "
        f"{r['closed_early']} closed early; one tick's send "
        f"takes {1000 * r['send_median']:.1f} ms (max {1000 * r['send_max']:.1f} ms); CPU while "
        "ticking, in cores: " + ", ".join(f"{side} {share:.2f}" for side, share in r["cpu"].items())
    )


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "inf"


# --- Main -----------------------------------------------------------------------------------


def main() -> int:
    os.environ.update(SERVER_ENV)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # uvicorn inherits it
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    say(
        f"BENCH setup: database {DATABASE}, settings {SERVER_ENV['DJANGO_SETTINGS_MODULE']}, one "
        f"uvicorn process, {CLIENT_PROCESSES} client process(es); latency: {CLIENTS} clients x "
        f"{SAMPLES} ticks at {HZ:g}/s; many: {MANY} (baseline {FEW}) clients x {SECONDS} ticks "
        "at 1/s"
    )
    common.database_create(SERVER_URL, DATABASE)
    process = None
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the server writes it until the end
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        users = seed(max(CLIENTS, MANY, FEW))
        connections.close_all()
        layer_config = json.loads(json.dumps(settings.CHANNEL_LAYERS["default"]))

        port = common.free_port(HOST)
        process = common.uvicorn_start(port, dict(os.environ), log)
        common.server_wait(f"http://{HOST}:{port}", process)
        url = f"ws://{HOST}:{port}/ws/live/"

        args = (url, layer_config, process.pid)
        results, met = [], []
        if "latency" in PHASES:
            latency = phase("latency", "ws", users[:CLIENTS], SAMPLES, HZ, *args)
            latency_base = phase("latency_baseline", "layer", users[:CLIENTS], SAMPLES, HZ, *args)
            results += [latency, latency_base]
        if "many" in PHASES:
            few = phase(f"clients_{FEW}", "ws", users[:FEW], SECONDS, 1.0, *args)
            many = phase(f"clients_{MANY}", "ws", users[:MANY], SECONDS, 1.0, *args)
            results += [few, many]
        server_alive = process.poll() is None
        time.sleep(2)  # the server's disconnect handlers, for the clients that closed last
        left = memberships_left()

        for r in results:
            say(detail(r))
        log.seek(0)
        pool_errors = log.read().count("MaxConnectionsError: Too many connections")
        say(
            f"BENCH live: {left} group memberships left in Redis after every client closed "
            "(each consumer's disconnect should have removed its own); the server logged "
            f"{pool_errors} errors of its Redis connection pool (Too many connections)"
        )
        if "latency" in PHASES:
            for q in ("p50", "p95"):
                say(
                    f"BENCH live_sample_latency_{q}: {1000 * latency[q]:.1f} ms (baseline "
                    f"{1000 * latency_base[q]:.1f} ms, ratio {ratio(latency[q], latency_base[q])})"
                )
            ok = latency["p95"] <= LATENCY_TARGET
            met.append(ok)
            say(
                f"BENCH targets: sample latency p95 <= {1000 * LATENCY_TARGET:.0f} ms "
                f"{'MET' if ok else 'NOT MET'} ({CLIENTS} clients, {HZ:g} ticks a second)"
            )
        if "many" in PHASES:
            say(
                f"BENCH live_{MANY}_clients_p95: {many['p95']:.3f} s (baseline {few['p95']:.3f} s"
                f", ratio {ratio(many['p95'], few['p95'])})"
            )
            say(
                f"BENCH live_{MANY}_clients_delivered: {many['delivered_pct']:.2f} % (baseline "
                f"{few['delivered_pct']:.2f} %, ratio "
                f"{ratio(many['delivered_pct'], few['delivered_pct'])})"
            )
            ok = many["p95"] <= MANY_TARGET and many["received"] == many["sent"]
            met.append(ok)
            say(
                f"BENCH targets: {MANY} clients p95 <= {MANY_TARGET:g} s with everything "
                f"delivered {'MET' if ok else 'NOT MET'}; cpus={os.cpu_count()}"
            )
        phases = results
        untold = sum(r["untold"] for r in phases)
        failed = sum(r["failed"] + r["closed_early"] for r in phases)
        if untold or failed or not server_alive:
            say(
                f"BENCH live: FAIL: {untold} messages lost without the client being told, {failed} "
                f"sockets failed or closed early, server {'up' if server_alive else 'DIED'}"
            )
            _server_log_tail(log)
            return 1
        strict = os.environ.get("BENCH_STRICT") == "1"
        return 2 if strict and not all(met) else 0
    except BaseException:
        _server_log_tail(log)
        raise
    finally:
        if process is not None:
            common.server_stop(process)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            common.database_drop(SERVER_URL, DATABASE)
        with contextlib.suppress(Exception):
            redis_forget()


def memberships_left() -> int:
    """Channels still in a group of this run (the Redis layer keeps a group as a sorted set of
    channel names; the Pub/Sub layer keeps none in Redis)."""
    import redis

    client = redis.Redis.from_url(SERVER_ENV["REDIS_URL"])
    pattern = f"{SERVER_ENV['CHANNELS_PREFIX']}:group:*"
    return sum(client.zcard(key) for key in client.scan_iter(match=pattern, count=1000))


def redis_forget() -> None:
    """This run's keys: the channel layer's and the cache's (both prefixed with its pid)."""
    import redis

    client = redis.Redis.from_url(SERVER_ENV["REDIS_URL"])
    for prefix in {SERVER_ENV["CHANNELS_PREFIX"], SERVER_ENV["CACHE_KEY_PREFIX"]}:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


def _server_log_tail(log, chars: int = 6000) -> None:
    log.seek(0)
    tail = log.read()[-chars:]
    if tail:
        say("BENCH server log (tail):\n" + tail.rstrip())


if __name__ == "__main__":
    if sys.argv[1:] == ["--client"]:
        client_process_main()
    else:
        sys.exit(main())
