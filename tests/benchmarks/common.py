"""What the benchmark scripts share: printing, and a PostgreSQL database of their own."""

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _maintenance(server_url: str, statement) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def database_create(server_url: str, name: str) -> None:
    """A fresh, empty database `name` (any earlier one of that name is dropped first)."""
    from psycopg import sql

    database_drop(server_url, name)
    _maintenance(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(server_url: str, name: str) -> None:
    from psycopg import sql

    _maintenance(
        server_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


# --- The books ---------------------------------------------------------------------------------

LEDGER_CHECKS = {
    "transactions that do not sum to zero": """
        SELECT count(*) FROM (
            SELECT transaction_id FROM credits_ledgerentry
            GROUP BY transaction_id HAVING SUM(amount) <> 0
        ) AS unbalanced""",
    "holder balances that differ from their entries": """
        SELECT count(*) FROM credits_creditaccount AS a
        WHERE a.kind <> 'system' AND a.balance <> COALESCE(
            (SELECT SUM(e.amount) FROM credits_ledgerentry AS e WHERE e.account_id = a.id), 0)
    """,
    "holder balances that differ from their lots": """
        SELECT count(*) FROM credits_creditaccount AS a
        WHERE a.kind <> 'system' AND a.balance <> COALESCE(
            (SELECT SUM(g.remaining) FROM credits_creditgrant AS g WHERE g.account_id = a.id),
            0)""",
    "lots whose remaining differs from their entries": """
        SELECT count(*) FROM credits_creditgrant AS g
        WHERE g.remaining <> COALESCE(
            (SELECT SUM(e.amount) FROM credits_ledgerentry AS e WHERE e.grant_id = g.id), 0)
    """,
    "negative balances or lots": """
        SELECT (SELECT count(*) FROM credits_creditaccount WHERE balance < 0)
             + (SELECT count(*) FROM credits_creditgrant WHERE remaining < 0)""",
}


def ledger_problems() -> list[str]:
    """The ledger's invariants, checked in SQL on Django's connection after a benchmark wrote
    to it: one line per kind of breach, empty when the books hold."""
    from django.db import connection

    problems = []
    with connection.cursor() as cursor:
        for name, statement in LEDGER_CHECKS.items():
            cursor.execute(statement)
            (count,) = cursor.fetchone()
            if count:
                problems.append(f"{count} {name}")
    return problems


# --- A portal server under uvicorn --------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def uvicorn_start(port: int, env: dict, log, *, workers: int = 1) -> subprocess.Popen:
    """portal.asgi:application on 127.0.0.1:`port`, with `env` as its whole environment."""
    uvicorn = Path(sys.executable).parent / "uvicorn"
    command = [str(uvicorn)] if uvicorn.exists() else [sys.executable, "-m", "uvicorn"]
    command += [
        "portal.asgi:application",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={workers}",
        "--no-access-log",
        "--log-level=warning",
    ]
    return subprocess.Popen(  # noqa: S603 - our own interpreter's uvicorn, fixed arguments
        command, cwd=ROOT, env=env, stdout=log, stderr=log
    )


def server_wait(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"BENCH server: exited with status {process.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"BENCH server: no answer from {base}/healthz in {timeout:g} s")


def server_stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
