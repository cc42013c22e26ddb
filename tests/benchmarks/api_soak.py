"""A soak of the API server that leaves nothing behind: many requests of every kind a server
sees, and then a count of the PostgreSQL connections it still holds. Used by bench_api.py (10,000
requests) and by tests/portal/api/test_connection_pool.py (a few hundred, on a pool of 4).

Each request's answer is checked, so a pool that ran dry (a connection borrowed and never given
back) shows as failures long before the count does: the pool never opens more than its maximum.
"""

import asyncio
from collections import Counter

import httpx

from portal.apikeys.tokens import key_generate
from tests.benchmarks.api_urls import SLOW_SECONDS

BALANCE = "/api/v1/credits/balance"
CANCEL_AFTER_SECONDS = 0.05  # the client gives up on /bench/slow mid-query


def _mix(key: str, cookies: dict, account: str) -> list[tuple[str, str, dict, set]]:
    """(name, path, request options, the statuses it may get; None: the client cancelled it,
    200: the answer came first, on a client whose event loop was held up past the deadline)."""
    bearer = {"headers": {"Authorization": f"Bearer {key}"}}
    unknown_key, _, _ = key_generate()  # well-formed, so looked up; no such key: refused
    return [
        ("key", BALANCE, bearer, {200}),
        ("session", BALANCE, {"cookies": cookies}, {200}),
        ("key", BALANCE, bearer, {200}),
        ("bad key", BALANCE, {"headers": {"Authorization": f"Bearer {unknown_key}"}}, {401}),
        ("session", BALANCE, {"cookies": cookies}, {200}),
        ("unknown route", "/api/v1/no-such-thing", bearer, {404}),
        ("error", "/bench/error", {}, {500}),
        ("baseline", f"/bench/baseline?account={account}", {}, {200}),
        ("cancelled", "/bench/slow", {"timeout": CANCEL_AFTER_SECONDS}, {None, 200}),
        ("key", BALANCE, bearer, {200}),
    ]


async def soak(
    base: str, *, requests: int, clients: int, key: str, cookies: dict, account: str
) -> tuple[Counter, Counter]:
    """`requests` requests from `clients` concurrent keep-alive clients, cycling through every
    kind: (what each kind got when it was one of the answers it may get, what went wrong), each
    as (kind, status or None for cancelled) -> count."""
    mix = _mix(key, cookies, account)
    done, wrong = Counter(), Counter()
    issued = iter(range(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for n in issued:
            name, path, options, expected = mix[n % len(mix)]
            options = dict(options)
            cookies_now = options.pop("cookies", None)
            client.cookies.clear()
            if cookies_now:
                client.cookies.update(cookies_now)
            try:
                response = await client.get(path, **options)
            except httpx.TimeoutException:
                outcome = None
            else:
                outcome = response.status_code
            if outcome in expected:
                done[(name, outcome)] += 1
            else:
                wrong[(name, outcome)] += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            client = httpx.AsyncClient(base_url=base, timeout=30)
            group.create_task(_run_and_close(client, client_loop))
    # A cancelled view goes on in its thread until its query ends; then it gives its
    # connection back. Give the last ones time to.
    await asyncio.sleep(SLOW_SECONDS + 1)
    return done, wrong


async def _run_and_close(client, loop) -> None:
    async with client:
        await loop(client)


def server_connections(maintenance_url: str, *, database: str, application_name: str) -> int:
    """The connections PostgreSQL counts on `database` under `application_name` (the server's
    DATABASE_URL sets it), read from another database's session so as not to count itself."""
    import psycopg

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (database, application_name),
        ).fetchone()
    return count
