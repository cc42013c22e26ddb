"""API throughput through a real server: `make bench` (not a test: pytest collects only test_*.py).

Starts uvicorn (portal.asgi:application, production-like: DEBUG=False) on a free port against a
PostgreSQL database of its own (BENCH_API_DATABASE, default portal_bench_api, created, migrated
and dropped here, on the server at BENCH_POSTGRES_URL), seeds a founder with a funded
organisation, an API key (credits:read) and a signed-in browser session, then measures
GET /api/v1/credits/balance with the key and with the session, side by side: BENCH_API_ROUNDS
rounds (default 3) of BENCH_API_SECONDS each (default 3) per kind, alternating which goes first,
with BENCH_API_CLIENTS concurrent keep-alive HTTP clients (default 8; asyncio + httpx). It prints

  BENCH api_balance_key: <req/s> req/s (baseline <session req/s> req/s, ratio <r>)

the target (key/session >= 0.9) and the number of non-200 responses (must be 0). Exit status 1
when any response was not a 200 or the server failed; 2 when BENCH_STRICT=1 and the target is
missed. BENCH_API_WORKERS sets uvicorn's worker processes (default 1); BENCH_API_SETTINGS the
settings module of both (default portal.settings.local), to try a change to them.
"""

import asyncio
import os
import secrets
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
TARGET = 0.9
PATH = "/api/v1/credits/balance"
HOST = "127.0.0.1"

# One environment for this process (seeding) and for the server: the same database, secret key
# (the session cookie is signed with it) and pepper (the key's hash is made with it).
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": os.environ.get("BENCH_API_SETTINGS", "portal.settings.local"),
    "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
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


def seed() -> tuple[str, str]:
    """A founder who owns a funded organisation: (their API key, their session cookie)."""
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
    return full_key, client.cookies[settings.SESSION_COOKIE_NAME].value


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
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (DATABASE,)
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


async def _one_client(client, stop_at: float, statuses: Counter) -> None:
    while time.monotonic() < stop_at:
        response = await client.get(PATH)
        statuses[response.status_code] += 1


async def _phase(clients, seconds: float) -> tuple[float, Counter]:
    """All clients at once for `seconds`: (200s per second, every status seen)."""
    statuses: Counter = Counter()
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(_one_client(c, stop_at, statuses) for c in clients))
    elapsed = time.monotonic() - started  # includes the requests in flight at the stop line
    return statuses[200] / elapsed, statuses


async def measure(base: str, full_key: str, session_cookie: str) -> dict:
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
    }
    try:
        # The two kinds must read the same thing, and both must be signed in.
        bodies = {}
        for kind, pool in kinds.items():
            response = await pool[0].get(PATH)
            if response.status_code != 200:
                raise SystemExit(f"BENCH {kind}: {response.status_code} {response.text[:300]}")
            bodies[kind] = response.json()
        if bodies["key"] != bodies["session"]:
            raise SystemExit(f"BENCH: the key and the session read different balances: {bodies}")
        for kind in kinds:  # warm both paths (connections, caches) before measuring
            await _phase(kinds[kind], WARMUP_SECONDS)
        rates: dict = {kind: [] for kind in kinds}
        statuses: dict = {kind: Counter() for kind in kinds}
        for n in range(ROUNDS):
            order = ["key", "session"] if n % 2 == 0 else ["session", "key"]
            for kind in order:
                rate, seen = await _phase(kinds[kind], SECONDS)
                rates[kind].append(rate)
                statuses[kind] += seen
            say(
                f"BENCH round {n + 1}/{ROUNDS}: key {rates['key'][-1]:.1f} req/s, "
                f"session {rates['session'][-1]:.1f} req/s"
            )
        return {"rates": rates, "statuses": statuses}
    finally:
        for pool in kinds.values():
            for client in pool:
                await client.aclose()


def _server_log_tail(log, chars: int = 6000) -> None:
    log.seek(0)
    tail = log.read()[-chars:]
    if tail:
        say("BENCH server log (tail):\n" + tail.rstrip())


# --- Main -----------------------------------------------------------------------------------


def main() -> int:
    say(
        f"BENCH setup: database {DATABASE}, uvicorn workers={WORKERS}, {CLIENTS} clients, "
        f"{ROUNDS} rounds x {SECONDS:g} s per kind, GET {PATH}"
    )
    database_create()
    process = None
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the server writes it until the end
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        full_key, session_cookie = seed()
        connections.close_all()  # the server is the database's only client from here on

        port = common.free_port(HOST)
        base = f"http://{HOST}:{port}"
        process = common.uvicorn_start(port, {**os.environ, **SERVER_ENV}, log, workers=WORKERS)
        common.server_wait(base, process)
        with ConnectionWatch() as watch:
            result = asyncio.run(measure(base, full_key, session_cookie))

        key_rate = sum(result["rates"]["key"]) / ROUNDS
        session_rate = sum(result["rates"]["session"]) / ROUNDS
        ratio = key_rate / session_rate if session_rate else 0.0
        say(
            f"BENCH api_balance_key: {key_rate:.1f} req/s "
            f"(baseline {session_rate:.1f} req/s, ratio {ratio:.2f})"
        )
        met = ratio >= TARGET
        say(
            f"BENCH targets: key/session >= {TARGET} {'MET' if met else 'NOT MET'}; "
            f"clients={CLIENTS} rounds={ROUNDS} seconds={SECONDS:g} workers={WORKERS} "
            f"cpus={os.cpu_count()}"
        )
        bad = {
            kind: {code: n for code, n in seen.items() if code != 200}
            for kind, seen in result["statuses"].items()
        }
        non_200 = sum(sum(codes.values()) for codes in bad.values())
        say(
            f"BENCH non-200 responses: {non_200} (must be 0; key {bad['key'] or 0}, "
            f"session {bad['session'] or 0})"
        )
        from django.conf import settings

        say(
            f"BENCH server: at most {watch.peak} PostgreSQL connections at once "
            f"(CONN_MAX_AGE={settings.DATABASES['default'].get('CONN_MAX_AGE')}, "
            f"{CLIENTS} clients)"
        )
        if process.poll() is not None:
            say(f"BENCH server: uvicorn died during the run (status {process.returncode})")
        if non_200 or process.poll() is not None:
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
