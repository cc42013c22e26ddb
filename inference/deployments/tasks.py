"""Celery tasks for model deployments: everything that talks to an engine or to Docker. Each
task takes an id, re-reads the state, and is safe to run twice."""

from __future__ import annotations

import logging
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import docker
from celery import shared_task
from django.conf import settings

from . import reconcile, runner, services
from .health import engine_probe
from .models import Replica

logger = logging.getLogger(__name__)
State = Replica.State


@shared_task(name="deployments.queue_advance", acks_late=True)
def queue_advance_task() -> list[int]:
    return services.replicas_queue_advance()


PROBES_AT_ONCE = 16


@shared_task(name="deployments.health_probe")
def health_probe_task() -> dict[str, int]:
    """Probe every replica that has an address and may serve (Celery beat, every
    LLM_HEALTH_INTERVAL): `GET {base_url}/models` with its key, a short timeout. The probes run
    side by side (PROBES_AT_ONCE threads), so a few silent engines do not hold up the round;
    the verdicts are recorded one by one afterwards."""
    timeout = min(3.0, max(0.5, settings.LLM_HEALTH_INTERVAL / 3))
    replicas = list(
        Replica.objects.filter(state__in=(State.STARTING, State.READY, State.UNHEALTHY))
        .exclude(base_url="")
        .values_list("pk", "base_url", "api_key")
    )

    def probe(row):
        _pk, base_url, api_key = row
        return engine_probe(base_url=base_url, api_key=api_key, timeout=timeout)

    with ThreadPoolExecutor(max_workers=PROBES_AT_ONCE) as pool:
        failures = list(pool.map(probe, replicas))
    changed = 0
    for (replica_id, _url, _key), failure in zip(replicas, failures, strict=True):
        if services.replica_probe_record(replica_id=replica_id, failure=failure):
            changed += 1
    return {"probed": len(replicas), "changed": changed}


# How long a start task watches a new engine before leaving it to the health beat (the
# reconciler fails a replica still STARTING after LLM_REPLICA_START_TIMEOUT, 15 minutes).
START_WATCH_SECONDS = 120


@shared_task(name="deployments.replica_start", acks_late=True)
def replica_start_task(replica_id: int) -> str:
    """Start the replica's engine container, then watch it until it answers its first probe
    (READY), exits (FAILED, with the engine's last words), or START_WATCH_SECONDS pass (the
    health beat takes over)."""
    replica = Replica.objects.select_related("deployment__model").filter(pk=replica_id).first()
    if replica is None or replica.state != State.STARTING or replica.external:
        return "skipped"
    try:
        spec = runner.engine_spec(replica)
        container_id, base_url = runner.engine_container_run(spec)
    except (runner.EngineError, docker.errors.DockerException) as exc:
        logger.warning("replica %s did not start: %s", replica_id, exc)
        services.replica_mark_failed(replica_id=replica_id, message=str(exc))
        return "failed"
    # The worker that starts engines runs on their Docker host: its name is the node's.
    if not services.replica_container_started(
        replica_id=replica_id, container_id=container_id, base_url=base_url, node=platform.node()
    ):
        # Stopped while its container was being made: the container must not outlive it.
        runner.engine_container_remove(container_id)
        return "stopped"
    return _watch_start(replica_id, container_id, base_url, replica.api_key)


def _watch_start(replica_id: int, container_id: str, base_url: str, api_key: str) -> str:
    deadline = time.monotonic() + START_WATCH_SECONDS
    while time.monotonic() < deadline:
        status = runner.engine_container_status(container_id)
        if status not in ("created", "running"):
            last_words = runner.engine_container_logs_tail(container_id)
            message = f"The engine exited ({status or 'gone'}). {last_words}".strip()
            services.replica_mark_failed(replica_id=replica_id, message=message[:500])
            runner.engine_container_remove(container_id)
            return "failed"
        failure = engine_probe(base_url=base_url, api_key=api_key, timeout=2.0)
        if not failure:
            services.replica_probe_record(replica_id=replica_id, failure="")
            return "ready"
        if not Replica.objects.filter(pk=replica_id, state=State.STARTING).exists():
            return "left"
        time.sleep(0.5)
    return "starting"


@shared_task(name="deployments.replica_stop", acks_late=True)
def replica_stop_task(replica_id: int) -> str:
    """Stop and remove the replica's container, then release its GPUs."""
    replica = Replica.objects.filter(pk=replica_id).first()
    if replica is None or replica.state != State.STOPPING:
        return "skipped"
    if replica.container_id:
        runner.engine_container_remove(replica.container_id)
    services.replica_mark_stopped(replica_id=replica_id)
    return "stopped"


@shared_task(name="deployments.reconcile", acks_late=True)
def reconcile_task() -> dict:
    """Match replicas to what deployments want, and containers to replicas (Celery beat)."""
    return reconcile.reconcile()
