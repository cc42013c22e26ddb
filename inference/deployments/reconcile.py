"""The reconciler: what the database says replicas are, against what Docker runs.

- A replica whose container vanished or exited is FAILED, its GPUs released (the next pass
  starts a replacement, after the restart back-off when replicas keep failing).
- A replica still STARTING after the start timeout is FAILED and its container removed.
- A STOPPING replica whose container is gone is STOPPED (its stop task was lost); one whose
  container is still there is asked to stop again.
- While engines run, the engine network's host firewall (firewall.py) is put back if it went.
- A container labelled by the portal that no live replica owns is removed (an orphan: a
  replica ended while Docker was away, or a database restored from a backup).
- Then every deployment gets the replicas it wants (services.deployment_reconcile), and the
  line of replicas waiting for GPUs moves.

Docker unreachable: the container half is skipped (logged) and the database half still runs.
"""

from __future__ import annotations

import datetime as dt
import logging

import docker
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from sandboxes.jobs import enqueue_after_commit

from . import runner, services
from .firewall import engine_firewall_ensure
from .models import Deployment, Replica

logger = logging.getLogger(__name__)
State = Replica.State
RUNNING_STATUSES = ("created", "running")
STOP_RETRY_SECONDS = 60


def _start_timeout() -> dt.timedelta:
    return dt.timedelta(seconds=settings.LLM_REPLICA_START_TIMEOUT)


def containers_reconcile(*, now: dt.datetime | None = None) -> dict[str, int]:
    """The container half (see the module). Raises docker.errors.DockerException when Docker
    does not answer."""
    now = now or timezone.now()
    containers = runner.engine_containers()
    if containers:
        # A host firewall reload takes the engine network's rules with it: put them back.
        repaired = engine_firewall_ensure(bridge=runner.engine_network().bridge)
        if repaired:
            logger.warning("the engine network's host firewall was repaired: %s", repaired)
    by_replica = {c.replica_public_id: c for c in containers}
    failed = stopped = removed = 0
    holding = Replica.objects.filter(state__in=services.HOLDING_STATES, external=False)
    owned: set[tuple[str, str]] = set()
    starting_without_container: set[str] = set()
    for replica in holding.order_by("pk"):
        public_id = str(replica.public_id)
        container = by_replica.get(public_id)
        if replica.state == State.STOPPING:
            if container is None:
                stopped += services.replica_mark_stopped(replica_id=replica.pk)
            else:
                owned.add((public_id, container.container_id))
                if replica.updated_at < now - dt.timedelta(seconds=STOP_RETRY_SECONDS):
                    enqueue_after_commit("deployments.replica_stop", replica.pk)
            continue
        if not replica.container_id:
            # Its start task is making the container now, or was lost.
            if replica.started_at and replica.started_at < now - _start_timeout():
                failed += services.replica_mark_failed(
                    replica_id=replica.pk, message="The engine did not start in time."
                )
            else:
                starting_without_container.add(public_id)
            continue
        alive = (
            container is not None
            and container.container_id == replica.container_id
            and container.status in RUNNING_STATUSES
        )
        if not alive:
            what = "vanished" if container is None else f"is {container.status}"
            failed += services.replica_mark_failed(
                replica_id=replica.pk, message=f"The engine's container {what}."
            )
            continue
        too_slow = (
            replica.state == State.STARTING
            and replica.started_at
            and replica.started_at < now - _start_timeout()
        )
        if too_slow:
            failed += services.replica_mark_failed(
                replica_id=replica.pk, message="The engine did not answer in time."
            )
            continue
        owned.add((public_id, replica.container_id))
    for container in containers:
        if (container.replica_public_id, container.container_id) in owned:
            continue
        if container.replica_public_id in starting_without_container:
            continue
        logger.warning(
            "removing engine container %s: no live replica owns it", container.container_id[:12]
        )
        removed += runner.engine_container_remove(container.container_id, grace_seconds=5)
    return {"failed": failed, "stopped": stopped, "orphans_removed": removed}


def reconcile() -> dict:
    """One pass of the reconciler (Celery beat)."""
    try:
        result: dict = containers_reconcile()
    except docker.errors.DockerException as exc:
        logger.warning("engine containers not reconciled: Docker does not answer (%s)", exc)
        result = {"docker": "unavailable"}
    wanting = Deployment.objects.filter(
        Q(state=Deployment.State.ACTIVE)
        | Q(replicas__state__in=services.COUNTED_STATES, replicas__external=False)
    ).distinct()
    added: list[int] = []
    for deployment_id in wanting.values_list("pk", flat=True):
        added += services.deployment_reconcile(deployment_id=deployment_id)
    result["added"] = len(added)
    result["started_from_queue"] = len(services.replicas_queue_advance())
    return result
