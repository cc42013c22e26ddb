"""Make the portal's records agree with what really runs.

The hub's database and Docker are caches of the truth the portal keeps, but things happen behind
everybody's back: a container crashes or is removed by hand, the hub restarts, the idle culler
stops a server, a worker dies between two steps. Every repair is audited.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record

from . import services
from .docker_client import sandbox_containers
from .hub_client import HubClient, hub_client
from .models import Sandbox
from .status_messages import StatusNote, note

logger = logging.getLogger(__name__)
Status = Sandbox.Status


def reconcile(*, hub: HubClient | None = None, containers: dict[str, str] | None = None) -> dict:
    if hub is not None:
        return _reconcile(hub, containers)
    with hub_client() as own:
        return _reconcile(own, containers)


def _reconcile(hub: HubClient, containers: dict[str, str] | None) -> dict:
    servers = hub.servers_running()
    if containers is None:
        try:
            containers = sandbox_containers()
        except Exception:  # no Docker here: judge by the hub alone
            logger.warning("reconcile: Docker is unreachable; using the hub's view only")
            containers = None
    repairs = {"stopped": 0, "failed": 0, "orphans_stopped": 0}
    known: set[tuple[str, str]] = set()
    spawn_grace = dt.timedelta(seconds=settings.HUB_SPAWN_TIMEOUT + 60)
    live = Sandbox.objects.filter(
        status__in=[Status.STARTING, Status.RUNNING, Status.STOPPING]
    ).select_related("user")
    for sandbox in live:
        key = (sandbox.user.hub_username, sandbox.server_name)
        known.add(key)
        server = servers.get(key)
        container = None if containers is None else containers.get(str(sandbox.public_id))
        if sandbox.status == Status.RUNNING:
            if server is None:
                _repair(sandbox, "stopped", note("server_stopped_outside"))
                repairs["stopped"] += 1
            elif containers is not None and container in (None, "exited", "dead"):
                _stop_in_hub(hub, hub_username=key[0], server=key[1])
                _repair(sandbox, "stopped", note("container_gone"))
                repairs["stopped"] += 1
        elif sandbox.status == Status.STOPPING and server is None:
            _repair(sandbox, "stopped", note("stopped"))
            repairs["stopped"] += 1
        elif (
            sandbox.status == Status.STARTING
            and server is None
            and sandbox.starting_at
            and timezone.now() - sandbox.starting_at > spawn_grace
        ):
            _repair(sandbox, "failed", note("start_lost"))
            repairs["failed"] += 1
    for key in servers.keys() - known:
        # A server the portal does not consider live: it must not run (and burn GPUs unpaid).
        _stop_in_hub(hub, hub_username=key[0], server=key[1])
        audit_record(
            actor=None,
            action=AuditAction.SANDBOX_RECONCILED_ORPHAN,
            data={"hub_user": key[0], "server": key[1]},
        )
        repairs["orphans_stopped"] += 1
    if any(repairs.values()):
        logger.info("reconcile repaired %s", repairs)
    return repairs


def _repair(sandbox: Sandbox, outcome: str, reason: StatusNote) -> None:
    if outcome == "failed":
        services.sandbox_mark_failed(sandbox_id=sandbox.pk, message=reason)
    else:
        services.sandbox_mark_stopped(sandbox_id=sandbox.pk, reason=reason)
    audit_record(
        actor=None,
        action=AuditAction.SANDBOX_RECONCILED,
        target=sandbox,
        data={"was": sandbox.status, "now": outcome, "reason": reason.english},
    )


def _stop_in_hub(hub: HubClient, *, hub_username: str, server: str) -> None:
    try:
        hub.server_stop(hub_username, server, remove=True)
    except Exception:
        logger.exception("reconcile: could not stop %s/%s", hub_username, server)
