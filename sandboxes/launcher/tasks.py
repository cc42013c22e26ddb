"""Celery tasks for sandboxes: everything that talks to the hub or Docker. Each task takes an
id, re-reads the state, and is safe to run twice (acks_late: a worker killed mid-task means the
task runs again)."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.conf import settings

from portal.users.models import User

from . import deadlines, services
from .disk import home_usage_measure
from .docker_client import volume_remove
from .firewall import firewall_ensure
from .hub_client import HubError, HubUnavailable, hub_client
from .leaving import hub_session_end
from .models import Sandbox
from .reconcile import reconcile
from .selectors import home_volume
from .status_messages import StatusNote, note

logger = logging.getLogger(__name__)
Status = Sandbox.Status


@shared_task(name="launcher.sandbox_start", acks_late=True)
def sandbox_start_task(sandbox_id: int) -> str:
    """Ask the hub to start the server and relay its progress until it is ready or failed."""
    sandbox = Sandbox.objects.select_related("user").filter(pk=sandbox_id).first()
    if sandbox is None or sandbox.status != Status.STARTING:
        return "skipped"
    user, server = sandbox.user.hub_username, sandbox.server_name
    try:
        with hub_client() as hub:
            try:
                if hub.server_start(user, server, display_name=sandbox.display_name):
                    services.sandbox_mark_running(sandbox_id=sandbox_id)
                    return "running"
            except HubError as exc:
                # A retried task finds the start already under way (400 "pending" or "running").
                if exc.status != 400 or hub.server_get(user, server) is None:
                    raise
            # The stream says `ready` at once for a server that is up already, and the moment
            # the hub sees it up otherwise: no polling, and nothing to ask first.
            for event in hub.server_progress(user, server, timeout=settings.HUB_SPAWN_TIMEOUT):
                if event.ready:
                    services.sandbox_mark_running(sandbox_id=sandbox_id)
                    return "running"
                if event.failed:
                    _fail(hub, sandbox, _spawn_message(event.message))
                    return "failed"
                services.sandbox_progress(
                    sandbox_id=sandbox_id, progress=event.progress, message=event.message
                )
            # The stream ended without a verdict: ask once more.
            current = hub.server_get(user, server)
            if current is not None and current.ready:
                services.sandbox_mark_running(sandbox_id=sandbox_id)
                return "running"
            _fail(hub, sandbox, note("server_not_ready"))
            return "failed"
    except HubUnavailable:
        logger.exception("hub unavailable while starting %s", server)
        services.sandbox_mark_failed(sandbox_id=sandbox_id, message=note("hub_unavailable"))
        return "failed"
    except HubError as exc:
        logger.warning("hub refused to start %s: %s", server, exc)
        services.sandbox_mark_failed(sandbox_id=sandbox_id, message=note("hub_refused", e=str(exc)))
        return "failed"


def _spawn_message(message: str) -> StatusNote:
    # The hub prefixes the spawner's reason with "Spawn failed: " (its words: kept as they are).
    reason = message.removeprefix("Spawn failed:").strip()
    return StatusNote(text=reason) if reason else note("server_failed")


def _fail(hub, sandbox: Sandbox, message: StatusNote) -> None:
    try:
        hub.server_stop(sandbox.user.hub_username, sandbox.server_name, remove=True)
    except HubError:
        logger.warning("could not clean up failed server %s", sandbox.server_name)
    services.sandbox_mark_failed(sandbox_id=sandbox.pk, message=message)


@shared_task(name="launcher.sandbox_stop", acks_late=True)
def sandbox_stop_task(sandbox_id: int, wait_seconds: float = 60, reason: dict | str = "") -> str:
    """Stop the server in the hub, wait until it is gone, then release its GPUs. `reason` is a
    status note's `as_value()` (or free text)."""
    sandbox = Sandbox.objects.select_related("user").filter(pk=sandbox_id).first()
    if sandbox is None or sandbox.status != Status.STOPPING:
        return "skipped"
    user, server = sandbox.user.hub_username, sandbox.server_name
    with hub_client() as hub:
        gone = hub.server_stop(user, server, remove=True)
        deadline = time.monotonic() + wait_seconds
        while not gone and time.monotonic() < deadline:
            time.sleep(0.25)
            gone = hub.server_get(user, server) is None
    if not gone:
        # Still stopping: reconciliation finishes the job when the hub lets go.
        logger.warning("server %s still stopping after %ss", server, wait_seconds)
        return "pending"
    reason = StatusNote.from_value(reason)
    services.sandbox_mark_stopped(sandbox_id=sandbox_id, reason=reason or note("stopped"))
    return "stopped"


@shared_task(name="launcher.queue_advance", acks_late=True)
def queue_advance_task() -> list[int]:
    return services.queue_advance()


@shared_task(name="launcher.firewall_check")
def firewall_check_task() -> list[str]:
    """Re-ensure the sandboxes' host firewall and audit what drifted (Celery beat)."""
    return firewall_ensure()


@shared_task(name="launcher.home_volume_delete", acks_late=True)
def home_volume_delete_task(user_id: int) -> bool:
    user = User.objects.filter(pk=user_id).first()
    return user is not None and volume_remove(home_volume(user))


@shared_task(name="launcher.home_usage_measure")
def home_usage_measure_task() -> dict:
    return home_usage_measure()


@shared_task(name="launcher.sandboxes_reconcile", acks_late=True)
def sandboxes_reconcile_task() -> dict:
    try:
        return reconcile()
    except HubUnavailable as exc:
        # Expected while the hub starts (the first beat of `make run` comes before it is up) or
        # restarts: nothing can be judged without it, and the next run repairs what is due.
        logger.warning("reconciliation waits for the hub, which does not answer (%s)", exc)
        return {"skipped": "hub unavailable"}


@shared_task(name="launcher.sandboxes_stop_over_age", acks_late=True)
def sandboxes_stop_over_age_task() -> list[str]:
    """Stop the sandboxes past their profile's maximum age (Celery beat)."""
    return [str(sandbox.public_id) for sandbox in deadlines.sandboxes_stop_over_age()]


@shared_task(name="launcher.sandboxes_stop_out_of_credits", acks_late=True)
def sandboxes_stop_out_of_credits_task() -> list[str]:
    """Stop the sandboxes whose credit countdown is over (Celery beat, as often as the metering
    tick that records the countdowns)."""
    return [str(sandbox.public_id) for sandbox in deadlines.sandboxes_stop_out_of_credits()]


HUB_SESSION_END_RETRIES = 10


@shared_task(name="launcher.hub_session_end", acks_late=True)
def hub_session_end_task(user_id: int, reason: str = "", attempt: int = 0) -> str:
    """End a person's hub session (leaving.hub_session_end). Tried again later, with back-off,
    while the hub is unreachable or a sandbox of theirs is still stopping; after
    HUB_SESSION_END_RETRIES it gives up, logged: their tokens at the portal are revoked already.
    (Enqueued again rather than Celery's retry, which an eager run raises to its caller.)"""
    try:
        outcome = hub_session_end(user_id=user_id, reason=reason)
    except HubError as exc:
        logger.warning("hub session of user %s, attempt %s: %s", user_id, attempt, exc)
        return _hub_session_end_later(user_id, reason, attempt, giving_up="failed")
    if outcome.pending:
        return _hub_session_end_later(user_id, reason, attempt, giving_up="pending")
    if outcome.hub_user_deleted:
        return "ended"
    return "servers_running" if outcome.servers_running else "tokens_revoked"


def _hub_session_end_later(user_id: int, reason: str, attempt: int, *, giving_up: str) -> str:
    if attempt >= HUB_SESSION_END_RETRIES:
        logger.error("gave up ending the hub session of user %s (%s)", user_id, giving_up)
        return giving_up
    hub_session_end_task.apply_async(
        (user_id,),
        {"reason": reason, "attempt": attempt + 1},
        countdown=min(5 * 2**attempt, 300),
    )
    return "again"
