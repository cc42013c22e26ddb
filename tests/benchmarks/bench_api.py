"""API throughput through a real server: `make bench` (not a test: pytest collects only test_*.py).

Starts uvicorn (portal.asgi:application, production-like: DEBUG=False) on a free port against a
PostgreSQL database of its own (BENCH_API_DATABASE, default portal_bench_api, created, migrated
and dropped here, on the server at BENCH_POSTGRES_URL), seeds a founder with a funded
organisation, an API key (credits:read) and a signed-in browser session, then measures
GET /api/v1/credits/balance with the key and with the session, and the baseline: a minimal
Django view on the same server that runs one indexed query on a pooled connection and answers
JSON (/bench/baseline, served only by the bench's own URLconf, api_urls.py). BENCH_API_ROUNDS
rounds (default 3) of BENCH_API_SECONDS each (default 3) per kind, rotating which goes first,
with BENCH_API_CLIENTS concurrent keep-alive HTTP clients (default 8; asyncio + httpx). Then a
soak: BENCH_API_SOAK_REQUESTS requests (default 10,000; key and session balances, bad keys,
unknown routes, views that fail inside a transaction, and requests the client gives up on
mid-query), after which PostgreSQL must count no more of the server's connections than its pool
holds (DATABASE_POOL_MAX_SIZE). It prints

  BENCH api_balance_key: <req/s> req/s (baseline <session req/s> req/s, ratio <r>)
  BENCH api_balance_rate: <req/s> req/s (baseline <minimal view req/s> req/s, ratio <r>)
  BENCH api_balance_p50: <ms> ms (baseline <minimal view ms> ms, ratio <r>)
  BENCH api_connections_after_soak: <n> connections (baseline <pool max> connections, ratio <r>)

the targets (key/session >= 0.9, key/minimal view >= 0.6, connections <= the pool) and the
number of non-200 responses in the measured phases (must be 0). Exit status 1 when any measured
response was not a 200, the soak left more connections than the pool or a wrong answer, or the
server failed; 2 when BENCH_STRICT=1 and a rate target is missed. BENCH_API_WORKERS sets
uvicorn's worker processes (default 1); BENCH_API_SETTINGS the settings module of both (default
tests.benchmarks.api_settings, the portal's local settings plus the bench views), to try a
change to them; BENCH_API_PROFILE=1 profiles one key request in this process (cProfile, top 25
by cumulative time) and lists its queries.
"""

import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_API_DATABASE", "portal_bench_api")
CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", "8"))
ROUNDS = int(os.environ.get("BENCH_API_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "3"))
WARMUP_SECONDS = float(os.environ.get("BENCH_API_WARMUP_SECONDS", "1"))
WORKERS = int(os.environ.get("BENCH_API_WORKERS", "1"))
SOAK_REQUESTS = int(os.environ.get("BENCH_API_SOAK_REQUESTS", "10000"))
TARGET = 0.9
TARGET_VS_BASELINE = 0.6
PATH = "/api/v1/credits/balance"
BASELINE_PATH = "/bench/baseline"
HOST = "127.0.0.1"
# Every connection the server opens carries this name, so pg_stat_activity counts only its own.
APPLICATION_NAME = "portal-bench-api"

# One environment for this process (seeding) and for the server: the same database, secret key
# (the session cookie is signed with it) and pepper (the key's hash is made with it).
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_API_SETTINGS", "tests.benchmarks.api_settings"),
    "DATABASE_URL": f"{SERVER_URL}/{DATABASE}?application_name={APPLICATION_NAME}",
    "DEBUG": "False",
    "ALLOWED_HOSTS": HOST,
    "SECRET_KEY": secrets.token_urlsafe(64),
    "API_KEY_PEPPER": secrets.token_urlsafe(32),
    "API_KEY_RATE_LIMIT_REQUESTS": str(10**9),  # the limit must not cut the key's run
    "CACHE_KEY_PREFIX": f"bench-api-{os.getpid()}",  # no counters shared with anything else
    "LOG_LEVEL": "WARNING",
}
os.environ.update(SERVER_ENV)


# --- The database of its own ----------------------------------------------------------------


def database_create() -> None:
    common.database_create(SERVER_URL, DATABASE)


def database_drop() -> None:
    common.database_drop(SERVER_URL, DATABASE)


# --- Fixtures -------------------------------------------------------------------------------


def seed() -> tuple[str, str, str]:
    """A founder who owns a funded organisation: (their API key, their session cookie, the
    public id of their account, which the baseline view reads)."""
    import datetime as dt
    from decimal import Decimal

    from django.conf import settings
    from django.test import Client
    from django.utils import timezone

    from portal.apikeys.services import apikey_create
    from portal.credits.models import CreditGrant
    from portal.credits.services import account_for_organisation, grant_issue
    from portal.organisations.models import Role
    from tests.factories import MembershipFactory

    founder = MembershipFactory(role=Role.OWNER)
    account = account_for_organisation(founder.organisation)
    grant_issue(
        account=account,
        credit_seconds=3600 * 1000,
        rate_pkr_per_gpu_hour=Decimal("750.00"),
        expires_at=timezone.now() + dt.timedelta(days=90),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key="bench-api-funds",
    )
    _, full_key = apikey_create(
        name="bench", scopes=["credits:read"], acting_user=founder.user, user=founder.user
    )
    client = Client()
    client.force_login(founder.user)  # a real session row, as a sign-in makes
    return full_key, client.cookies[settings.SESSION_COOKIE_NAME].value, str(account.public_id)


# --- The server -----------------------------------------------------------------------------


class ConnectionWatch:
    """Samples how many PostgreSQL connections the server holds on the bench database (a
    server that leaks connections runs the database out of them: "too many clients")."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
            while not self._stop.is_set():
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = %s",
                    (DATABASE, APPLICATION_NAME),
                ).fetchone()
                self.peak = max(self.peak, count)
                self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- The load -------------------------------------------------------------------------------


async def _one_client(
    client, path: str, stop_at: float, statuses: Counter, latencies: list
) -> None:
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        response = await client.get(path)
        latencies.append(time.perf_counter() - started)
        statuses[response.status_code] += 1


async def _phase(clients, path: str, seconds: float) -> tuple[float, Counter, list]:
    """All clients at once for `seconds`: (200s per second, every status seen, each
    request's seconds)."""
    statuses: Counter = Counter()
    latencies: list = []
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(_one_client(c, path, stop_at, statuses, latencies) for c in clients))
    elapsed = time.monotonic() - started  # includes the requests in flight at the stop line
    return statuses[200] / elapsed, statuses, latencies


async def measure(base: str, full_key: str, session_cookie: str, account: str) -> dict:
    import httpx
    from django.conf import settings

    def clients(headers=None, cookies=None):
        return [
            httpx.AsyncClient(base_url=base, timeout=30, headers=headers, cookies=cookies)
            for _ in range(CLIENTS)
        ]

    kinds = {
        "key": clients(headers={"Authorization": f"Bearer {full_key}"}),
        "session": clients(cookies={settings.SESSION_COOKIE_NAME: session_cookie}),
        "baseline": clients(),
    }
    paths = {"key": PATH, "session": PATH, "baseline": f"{BASELINE_PATH}?account={account}"}
    try:
        # The two kinds must read the same thing, and both must be signed in; the baseline
        # reads the same account's balance.
        bodies = {}
        for kind, pool in kinds.items():
            response = await pool[0].get(paths[kind])
            if response.status_code != 200:
                raise SystemExit(f"BENCH {kind}: {response.status_code} {response.text[:300]}")
            bodies[kind] = response.json()
        if bodies["key"] != bodies["session"]:
            raise SystemExit(f"BENCH: the key and the session read different balances: {bodies}")
        if bodies["baseline"]["balance"] != bodies["key"]["balance_credit_seconds"]:
            raise SystemExit(f"BENCH: the baseline read another balance: {bodies}")
        for kind in kinds:  # warm every path (connections, caches) before measuring
            await _phase(kinds[kind], paths[kind], WARMUP_SECONDS)
        rates: dict = {kind: [] for kind in kinds}
        latencies: dict = {kind: [] for kind in kinds}
        statuses: dict = {kind: Counter() for kind in kinds}
        order = list(kinds)
        for n in range(ROUNDS):
            for kind in order[n % 3 :] + order[: n % 3]:
                rate, seen, took = await _phase(kinds[kind], paths[kind], SECONDS)
                rates[kind].append(rate)
                latencies[kind] += took
                statuses[kind] += seen
            say(
                f"BENCH round {n + 1}/{ROUNDS}: "
                + ", ".join(f"{kind} {rates[kind][-1]:.1f} req/s" for kind in kinds)
            )
        return {"rates": rates, "latencies": latencies, "statuses": statuses}
    finally:
        for pool in kinds.values():
            for client in pool:
                await client.aclose()


def _server_log_tail(log, chars: int = 6000) -> None:
    log.seek(0)
    tail = log.read()[-chars:]
    if tail:
        say("BENCH server log (tail):\n" + tail.rstrip())


# --- Where a request's time goes -------------------------------------------------------------


def profile(full_key: str) -> None:
    """One key request through Django's test client in this process, after a warm-up: its
    queries, and cProfile's top functions by cumulative time over 200 of them."""
    import cProfile
    import io
    import pstats

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {full_key}", HTTP_HOST=HOST)
    for _ in range(20):
        client.get(PATH)
    with CaptureQueriesContext(connection) as queries:
        client.get(PATH)
    say(f"BENCH profile: {len(queries)} queries for one key request")
    for query in queries.captured_queries:
        say(f"BENCH profile query: {query['time']} s {query['sql'][:160]}")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        client.get(PATH)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(25)
    say(out.getvalue())


# --- Main -----------------------------------------------------------------------------------


def _p50_ms(latencies: list) -> float:
    return statistics.median(latencies) * 1000 if latencies else 0.0


def main() -> int:
    say(
        f"BENCH setup: database {DATABASE}, uvicorn workers={WORKERS}, {CLIENTS} clients, "
        f"{ROUNDS} rounds x {SECONDS:g} s per kind, GET {PATH} and {BASELINE_PATH}; "
        f"soak {SOAK_REQUESTS} requests"
    )
    database_create()
    process = None
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the server writes it until the end
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        from tests.benchmarks import api_soak  # imports the URLconf: after setup

        pool_max = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
        call_command("migrate", verbosity=0, interactive=False)
        full_key, session_cookie, account = seed()
        if os.environ.get("BENCH_API_PROFILE") == "1":
            profile(full_key)
        connections.close_all()  # the server is the database's only client from here on
        for connection in connections.all():
            connection.close_pool()

        port = common.free_port(HOST)
        base = f"http://{HOST}:{port}"
        process = common.uvicorn_start(port, {**os.environ, **SERVER_ENV}, log, workers=WORKERS)
        common.server_wait(base, process)
        with ConnectionWatch() as watch:
            result = asyncio.run(measure(base, full_key, session_cookie, account))
        rates = {kind: sum(values) / ROUNDS for kind, values in result["rates"].items()}
        p50 = {kind: _p50_ms(values) for kind, values in result["latencies"].items()}

        ratio = rates["key"] / rates["session"] if rates["session"] else 0.0
        say(
            f"BENCH api_balance_key: {rates['key']:.1f} req/s "
            f"(baseline {rates['session']:.1f} req/s, ratio {ratio:.2f})"
        )
        vs_baseline = rates["key"] / rates["baseline"] if rates["baseline"] else 0.0
        say(
            f"BENCH api_balance_rate: {rates['key']:.1f} req/s "
            f"(baseline {rates['baseline']:.1f} req/s, ratio {vs_baseline:.2f})"
        )
        p50_ratio = p50["key"] / p50["baseline"] if p50["baseline"] else 0.0
        say(
            f"BENCH api_balance_p50: {p50['key']:.2f} ms "
            f"(baseline {p50['baseline']:.2f} ms, ratio {p50_ratio:.2f})"
        )
        say(
            f"BENCH api_balance_session_p50: {p50['session']:.2f} ms "
            f"(baseline {p50['key']:.2f} ms, ratio "
            f"{(p50['session'] / p50['key'] if p50['key'] else 0.0):.2f})"
        )
        met = ratio >= TARGET and vs_baseline >= TARGET_VS_BASELINE
        say(
            f"BENCH targets: key/session >= {TARGET}, key/minimal view >= {TARGET_VS_BASELINE} "
            f"{'MET' if met else 'NOT MET'}; clients={CLIENTS} rounds={ROUNDS} "
            f"seconds={SECONDS:g} workers={WORKERS} cpus={os.cpu_count()}"
        )
        bad = {
            kind: {code: n for code, n in seen.items() if code != 200}
            for kind, seen in result["statuses"].items()
        }
        non_200 = sum(sum(codes.values()) for codes in bad.values())
        say(
            f"BENCH non-200 responses: {non_200} (must be 0; "
            + ", ".join(f"{kind} {codes or 0}" for kind, codes in bad.items())
            + ")"
        )

        started = time.monotonic()
        done, wrong = asyncio.run(
            api_soak.soak(
                base,
                requests=SOAK_REQUESTS,
                clients=CLIENTS,
                key=full_key,
                cookies={settings.SESSION_COOKIE_NAME: session_cookie},
                account=account,
            )
        )
        after = api_soak.server_connections(
            f"{SERVER_URL}/postgres", database=DATABASE, application_name=APPLICATION_NAME
        )
        say(
            f"BENCH soak: {sum(done.values())} of {SOAK_REQUESTS} requests answered as they "
            f"must in {time.monotonic() - started:.1f} s ({dict(done)}); wrong: {dict(wrong)}"
        )
        say(
            f"BENCH api_connections_after_soak: {after} connections "
            f"(baseline {pool_max} connections, ratio {after / pool_max:.2f})"
        )
        say(
            f"BENCH server: at most {watch.peak} PostgreSQL connections at once while measured "
            f"(pool of at most {pool_max}, {CLIENTS} clients)"
        )
        leaked = after > pool_max or bool(wrong)
        if process.poll() is not None:
            say(f"BENCH server: uvicorn died during the run (status {process.returncode})")
        if non_200 or leaked or process.poll() is not None:
            _server_log_tail(log)
            return 1
        strict = os.environ.get("BENCH_STRICT") == "1"
        return 2 if strict and not met else 0
    except BaseException:
        _server_log_tail(log)
        raise
    finally:
        if process is not None:
            common.server_stop(process)
        from django.db import connections

        connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            database_drop()


if __name__ == "__main__":
    sys.exit(main())
