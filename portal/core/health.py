"""Readiness probes: each dependency answers within a short timeout or is reported down."""

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.db import connection
from redis import Redis


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    latency_ms: float
    error: str = ""


def _timed(name: str, probe: Callable[[], None]) -> ProbeResult:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - a probe reports any failure, it never raises
        # The class name only: the message can carry hosts and credentials of the deployment.
        return ProbeResult(name, False, _ms_since(started), type(exc).__name__)
    return ProbeResult(name, True, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis() -> None:
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    finally:
        client.close()


def _hub() -> None:
    """The hub's API root answers without a token; anything but 200 means it is not ready."""
    response = httpx.get(
        settings.HUB_API_URL.rstrip("/") + "/", timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS
    )
    response.raise_for_status()


PROBES: dict[str, Callable[[], None]] = {"database": _database, "redis": _redis, "hub": _hub}


def readiness() -> list[ProbeResult]:
    """Run every probe: the database, Redis and JupyterHub."""
    return [_timed(name, probe) for name, probe in PROBES.items()]
