"""Launch, queue, start, stop and delete sandboxes. The only code that changes `Sandbox.status`.

Every change happens in one transaction with what it implies (GPU allocation or release, the
audit event), and whatever talks to the hub runs afterwards in Celery (after the commit; tasks are
named, not imported: sandboxes/jobs.py).

This module is the sandbox's state machine, and it is kept whole on purpose (about 450 lines):
its transitions share the row lock (`_locked`), the start (`_to_starting`) and the release
(`_end`, which closes the run and moves the queue), so each reads beside the others it must
agree with. Everything that is not a transition lives elsewhere: the reads in selectors.py,
who may launch what and what the hub may start in entitlement.py, the stops on a deadline in
deadlines.py, the live messages in messages.py, the Celery tasks in tasks.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import string

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError
from portal.organisations.models import Organisation
from portal.users.models import User
from sandboxes.gpus import services as gpus
from sandboxes.jobs import enqueue_after_commit
from sandboxes.metering import services as metering

from .entitlement import already_starting, launch_check
from .hub_client import HubError
from .hub_urls import server_url
from .messages import sandbox_status_send, spawn_progress_send
from .models import ResourceProfile, Sandbox, SandboxImage, SandboxStart
from .selectors import (
    current_start_id,
    holder_for,
    over_gpu_cap,
    queued_ahead,
    sandbox_for_server,
)
from .status_messages import StatusNote, note

logger = logging.getLogger(__name__)
Status = Sandbox.Status
_ALPHABET = string.ascii_lowercase + string.digits


# --- Launch ----------------------------------------------------------------------------------


def _server_name() -> str:
    return "sb-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def sandbox_launch(
    *,
    user: User,
    image: SandboxImage,
    profile: ResourceProfile,
    organisation: Organisation | None = None,
    name: str = "",
    ip: str | None = None,
) -> Sandbox:
    """Check the launch is allowed and paid for, then allocate GPUs (or queue) and start.

    Refusals raise ApplicationError and leave nothing behind: no sandbox, no allocation.
    """
    holder = holder_for(user=user, organisation=organisation)
    with transaction.atomic():
        # One person's launches go one at a time (the live-count check must not race).
        User.objects.select_for_update().filter(pk=user.pk).first()
        launch_check(user=user, holder=holder, image=image, profile=profile)
        try:
            with transaction.atomic():
                sandbox = Sandbox.objects.create(
                    user=user,
                    organisation=holder.organisation,
                    account=holder.account,
                    image=image,
                    profile=profile,
                    server_name=_server_name(),
                    name=name.strip()[:80],
                )
        except IntegrityError as exc:
            raise already_starting() from exc
        _allocate_or_queue(sandbox)
        audit_record(
            actor=user,
            action=AuditAction.SANDBOX_LAUNCHED,
            target=sandbox,
            ip=ip,
            data={"image": image.image, "profile": profile.slug, "status": sandbox.status},
        )
    return sandbox


def _allocate(sandbox: Sandbox) -> list[str]:
    profile = sandbox.profile
    return gpus.gpu_allocate(
        sandbox=sandbox,
        count=profile.gpu_count,
        model=profile.gpu_model,
        mig_profile=profile.mig_profile,
    )


def _allocate_or_queue(sandbox: Sandbox) -> None:
    """Starting if the GPUs it needs are given now (or it needs none); queued otherwise."""
    if sandbox.profile.gpu_count:
        over_cap = over_gpu_cap(sandbox)
        first_in_line = not queued_ahead(sandbox).exists()
        if over_cap or not first_in_line or not _allocate(sandbox):
            sandbox.status = Status.QUEUED
            sandbox.queued_at = sandbox.queued_at or timezone.now()
            cap = settings.SANDBOX_MAX_GPUS_PER_HOLDER
            organisation = str(sandbox.organisation) if sandbox.organisation else ""
            noted = _note(
                sandbox,
                (
                    note("queued_over_cap", organisation=organisation, cap=cap)
                    if organisation
                    else note("queued_over_own_cap", cap=cap)
                )
                if over_cap
                else note("queued"),
            )
            sandbox.save(update_fields=["status", "queued_at", *noted, "updated_at"])
            sandbox_status_send(sandbox)
            return
    _to_starting(sandbox, message=note("starting"))


def _queue_key(profile: ResourceProfile) -> tuple[str, str]:
    return profile.gpu_model, profile.mig_profile


def _queue_lock() -> None:
    """Serialise queue advances (FIFO must not depend on which worker ran first). SQLite
    serialises every writer already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('launcher.queue'))")


def queue_advance() -> list[int]:
    """Start queued sandboxes, oldest first, while GPUs of their kind are free.

    FIFO per kind of GPU: once the oldest of a kind cannot be served, nobody younger of that
    kind jumps ahead. A sandbox held back only by its holder's GPU cap does not block others.
    """
    started: list[int] = []
    with transaction.atomic():
        _queue_lock()
        blocked: set[tuple[str, str]] = set()
        queued = (
            Sandbox.objects.filter(status=Status.QUEUED)
            .select_related("profile", "organisation")
            .order_by("queued_at", "pk")
            .select_for_update(of=("self",))
        )
        for sandbox in queued:
            key = _queue_key(sandbox.profile)
            if key in blocked:
                continue
            if over_gpu_cap(sandbox):
                continue
            if not _allocate(sandbox):
                blocked.add(key)
                continue
            _to_starting(sandbox, message=note("starting_gpu_free"))
            started.append(sandbox.pk)
    return started


def _note(sandbox: Sandbox, message: StatusNote | str) -> list[str]:
    """Set the sandbox's status message (a note, or free text); returns the fields to save."""
    message = StatusNote.from_value(message)
    sandbox.status_code = message.code
    sandbox.status_params = message.params
    sandbox.status_message = message.english
    return ["status_code", "status_params", "status_message"]


def _to_starting(sandbox: Sandbox, *, message: StatusNote) -> None:
    sandbox.status = Status.STARTING
    sandbox.starting_at = timezone.now()
    sandbox.progress = 0
    noted = _note(sandbox, message)
    sandbox.save(update_fields=["status", "starting_at", "progress", *noted, "updated_at"])
    # Its resources are allocated from now: the start is recorded and its time is charged,
    # whether or not the server ever becomes ready. (A start left open by a status changed
    # behind the services' back ends here, so the new one is the only current start.)
    SandboxStart.objects.filter(sandbox=sandbox, ended_at__isnull=True).update(
        ended_at=sandbox.starting_at,
        outcome=SandboxStart.Outcome.STOPPED,
        updated_at=sandbox.starting_at,
    )
    SandboxStart.objects.create(
        sandbox=sandbox, user_id=sandbox.user_id, started_at=sandbox.starting_at
    )
    metering.run_open(sandbox=sandbox, at=sandbox.starting_at)
    sandbox_status_send(sandbox)
    enqueue_after_commit("launcher.sandbox_start", sandbox.pk)


# --- What the hub reports --------------------------------------------------------------------


def _locked(sandbox_id: int) -> Sandbox | None:
    return (
        Sandbox.objects.select_for_update(of=("self",))
        .select_related("user", "profile", "image")
        .filter(pk=sandbox_id)
        .first()
    )


def sandbox_progress(*, sandbox_id: int, progress: int, message: str) -> None:
    """A spawn progress event (the hub's words, which have no code): remembered for a page
    reload, and pushed to the browser."""
    updated = Sandbox.objects.filter(pk=sandbox_id, status=Status.STARTING).update(
        progress=max(0, min(progress, 100)),
        status_message=message[:500],
        status_code="",
        status_params={},
    )
    if updated:
        sandbox = Sandbox.objects.select_related("user").get(pk=sandbox_id)
        spawn_progress_send(sandbox)


def sandbox_mark_running(*, sandbox_id: int) -> bool:
    with transaction.atomic():
        sandbox = _locked(sandbox_id)
        if sandbox is None or sandbox.status != Status.STARTING:
            return False
        sandbox.status = Status.RUNNING
        sandbox.running_at = timezone.now()
        sandbox.progress = 100
        noted = _note(sandbox, note("ready"))
        sandbox.save(update_fields=["status", "running_at", "progress", *noted, "updated_at"])
        # Normally open since the start (`_to_starting`); this covers a start older than that.
        metering.run_open(sandbox=sandbox, at=sandbox.starting_at or sandbox.running_at)
        sandbox_status_send(sandbox)
    return True


def sandbox_mark_failed(*, sandbox_id: int, message: StatusNote | str) -> bool:
    """The start failed: nothing is held any more; the person sees why (a note, or the hub's
    words)."""
    message = StatusNote.from_value(message)
    with transaction.atomic():
        sandbox = _locked(sandbox_id)
        if sandbox is None or sandbox.status in (Status.STOPPED, Status.FAILED):
            return False
        _end(sandbox, Status.FAILED, message)
        audit_record(
            actor=None,
            action=AuditAction.SANDBOX_FAILED,
            target=sandbox,
            data={"reason": message.english},
        )
    return True


def sandbox_mark_stopped(*, sandbox_id: int, reason: StatusNote | str, actor=None) -> bool:
    """The server is gone (stopped by the portal, culled, crashed, removed by hand): release its
    GPUs and let the queue move. Idempotent."""
    reason = StatusNote.from_value(reason)
    with transaction.atomic():
        sandbox = _locked(sandbox_id)
        if sandbox is None or sandbox.status in (Status.STOPPED, Status.FAILED):
            return False
        _end(sandbox, Status.STOPPED, reason)
        audit_record(
            actor=actor,
            action=AuditAction.SANDBOX_STOPPED,
            target=sandbox,
            data={"reason": reason.english},
        )
    return True


def sandbox_server_gone(*, hub_username: str, server_name: str, start_id: str | None) -> bool:
    """The hub reports a server gone (idle culler, the person's stop in the hub UI, a crash).

    It ends a running or stopping sandbox, and only when the report is about the sandbox's
    current start: a restart reuses the server name, and a late report about an earlier start
    must not release the GPUs (and end the charging) of the one running now. A report without a
    start id (a server started before starts had ids) is believed."""
    sandbox = sandbox_for_server(hub_username=hub_username, server_name=server_name)
    if sandbox is None:
        return False
    with transaction.atomic():
        locked = _locked(sandbox.pk)
        if locked.status not in (Status.RUNNING, Status.STOPPING):
            return False
        if start_id is not None:
            current = current_start_id(sandbox=locked)
            if current is None or str(current) != start_id:
                logger.warning(
                    "ignored server-stopped of %s/%s for start %s: the current start is %s",
                    hub_username,
                    server_name,
                    start_id,
                    current,
                )
                return False
        reason = note("server_stopped")
        _end(locked, Status.STOPPED, reason)
        audit_record(
            actor=None,
            action=AuditAction.SANDBOX_STOPPED,
            target=locked,
            data={"reason": reason.english},
        )
    return True


def _end(sandbox: Sandbox, status: str, message: StatusNote) -> None:
    had_gpus = bool(gpus.gpu_release(sandbox=sandbox))
    sandbox.status = status
    sandbox.stopped_at = timezone.now()
    noted = _note(sandbox, message)
    sandbox.save(update_fields=["status", "stopped_at", *noted, "updated_at"])
    SandboxStart.objects.filter(sandbox=sandbox, ended_at__isnull=True).update(
        ended_at=sandbox.stopped_at,
        outcome=(
            SandboxStart.Outcome.FAILED if status == Status.FAILED else SandboxStart.Outcome.STOPPED
        ),
        updated_at=sandbox.stopped_at,
    )
    # Released: the run (opened at the start) ends here, and its last partial interval is
    # settled once, after the commit.
    metering.run_close(sandbox=sandbox, at=sandbox.stopped_at)
    sandbox_status_send(sandbox)
    if had_gpus:
        enqueue_after_commit("launcher.queue_advance")


# --- What people ask for ---------------------------------------------------------------------


def sandbox_stop(
    *, sandbox: Sandbox, acting_user, reason: StatusNote | str = "", ip: str | None = None
):
    """Stop a sandbox. A queued one simply leaves the queue; a starting or running one is
    stopped in the hub (Celery); its home volume stays. `reason` (a note, or free text) is what
    its owner reads."""
    reason = StatusNote.from_value(reason)
    with transaction.atomic():
        locked = _locked(sandbox.pk)
        if locked.status == Status.QUEUED:
            _end(locked, Status.STOPPED, reason or note("left_queue"))
        elif locked.status in (Status.STARTING, Status.RUNNING, Status.REQUESTED):
            locked.status = Status.STOPPING
            noted = _note(locked, reason or note("stopping"))
            locked.save(update_fields=["status", *noted, "updated_at"])
            sandbox_status_send(locked)
            enqueue_after_commit("launcher.sandbox_stop", locked.pk, reason=reason.as_value())
        elif locked.status != Status.STOPPING:
            raise ApplicationError(_("This sandbox is not running."), code="wrong_state")
        audit_record(
            actor=acting_user,
            action=AuditAction.SANDBOX_STOP_REQUESTED,
            target=locked,
            ip=ip,
            data={"reason": reason.english},
        )
    return locked


def sandboxes_stop_live(
    *, sandboxes, acting_user, reason: StatusNote | str, ip: str | None = None
) -> list:
    """Stop every live sandbox of `sandboxes` (a queryset) through `sandbox_stop`, oldest first;
    one already stopping is left as it is, one that ended meanwhile is skipped. Returns those
    asked to stop."""
    stopped = []
    live = sandboxes.filter(status__in=Sandbox.LIVE).exclude(status=Status.STOPPING)
    for sandbox in live.order_by("pk"):
        try:
            with transaction.atomic():
                stopped.append(
                    sandbox_stop(sandbox=sandbox, acting_user=acting_user, reason=reason, ip=ip)
                )
        except ApplicationError:  # it stopped or failed on its own in the meantime
            continue
    return stopped


def sandbox_restart(*, sandbox: Sandbox, acting_user, ip: str | None = None) -> Sandbox:
    """Start a stopped (or failed) sandbox again: same name, same home, new GPUs."""
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=acting_user.pk).first()
        locked = _locked(sandbox.pk)
        if locked.status not in (Status.STOPPED, Status.FAILED):
            raise ApplicationError(
                _("Only a stopped sandbox can be started again."), code="wrong_state"
            )
        holder = holder_for(user=locked.user, organisation=locked.organisation)
        launch_check(user=locked.user, holder=holder, image=locked.image, profile=locked.profile)
        locked.queued_at = None
        locked.stopped_at = None
        locked.running_at = None
        try:
            with transaction.atomic():
                locked.status = Status.REQUESTED
                locked.save(update_fields=["status", "queued_at", "stopped_at", "running_at"])
        except IntegrityError as exc:
            raise already_starting() from exc
        _allocate_or_queue(locked)
        audit_record(actor=acting_user, action=AuditAction.SANDBOX_RESTARTED, target=locked, ip=ip)
    return locked


def sandbox_delete(
    *, sandbox: Sandbox, acting_user, delete_home: bool = False, ip: str | None = None
) -> None:
    """Forget a stopped sandbox. Its owner's home volume is deleted only when asked, and only
    when none of their other sandboxes is live (they share it)."""
    with transaction.atomic():
        locked = _locked(sandbox.pk)
        if locked.status not in (Status.STOPPED, Status.FAILED):
            raise ApplicationError(_("Stop the sandbox before deleting it."), code="wrong_state")
        if delete_home and Sandbox.objects.for_user(locked.user).live().exists():
            raise ApplicationError(
                _("Your home folder is in use by another sandbox; stop it first."),
                code="wrong_state",
            )
        locked.deleted_at = timezone.now()
        locked.save(update_fields=["deleted_at", "updated_at"])
        audit_record(
            actor=acting_user,
            action=AuditAction.SANDBOX_DELETED,
            target=locked,
            ip=ip,
            data={"home_deleted": delete_home},
        )
        if delete_home:
            user_id = locked.user_id
            enqueue_after_commit("launcher.home_volume_delete", user_id)


# --- Access to a running sandbox ---------------------------------------------------------------


def access_token_issue(*, sandbox: Sandbox, acting_user, ip: str | None = None) -> dict:
    """A short-lived hub token that reaches only this sandbox's server."""
    # Looked up when called, not bound at import: tests put a fake hub in hub_client's place.
    from .hub_client import hub_client  # noqa: PLC0415 - looked up at call time

    if sandbox.status != Status.RUNNING:
        raise ApplicationError(_("The sandbox is not running."), code="wrong_state")
    user = sandbox.user.hub_username
    lifetime = settings.HUB_ACCESS_TOKEN_LIFETIME
    try:
        with hub_client() as hub:
            token = hub.token_create(
                user,
                scopes=[f"access:servers!server={user}/{sandbox.server_name}"],
                expires_in=lifetime,
                note=f"portal access token for {sandbox.server_name}",
            )
    except HubError as exc:
        raise ApplicationError(
            _("The notebook service is unavailable; try again shortly."), code="unavailable"
        ) from exc
    audit_record(
        actor=acting_user, action=AuditAction.SANDBOX_ACCESS_TOKEN_ISSUED, target=sandbox, ip=ip
    )
    return {
        "token": token,
        "expires_at": timezone.now() + dt.timedelta(seconds=lifetime),
        "server_url": server_url(user, sandbox.server_name),
    }
