"""Deploy, scale and stop models; place, start, watch and end their replicas. The only code that
changes `Deployment.state` or `Replica.state`.

Each transition runs under the replica's row lock, in one transaction with what it implies (the
GPU allocation or release, the audit event where a person acted), and whatever talks to Docker
runs afterwards in Celery (tasks named, not imported: sandboxes/jobs.py).

GPUs: a replica takes its devices through the sandboxes' allocator (`sandboxes.gpus`), so the
database's one-open-allocation-per-device constraint keeps a device from a sandbox and a replica
at once. A replica that cannot get them waits in line (QUEUED), in the same first-come order as
queued sandboxes of the same kind of GPU: it registers a `GpuWait`, which the allocator checks
before it gives devices to a sandbox that came later, and it does not jump a sandbox that has
waited longer (`_sandboxes_ahead`). The line moves when devices are released (a signal from the
allocator, `receivers.py`) and on every reconcile.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError
from sandboxes.gpus import services as gpus
from sandboxes.gpus.models import GpuDevice
from sandboxes.jobs import enqueue_after_commit
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.selectors import over_gpu_cap

from .health import engine_probe
from .models import Deployment, Replica

logger = logging.getLogger(__name__)
State = Replica.State

# The replica state machine: every move a service may make. Anything else is refused.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.REQUESTED: frozenset({State.QUEUED, State.STARTING, State.STOPPED, State.FAILED}),
    State.QUEUED: frozenset({State.STARTING, State.STOPPED, State.FAILED}),
    State.STARTING: frozenset({State.READY, State.STOPPING, State.FAILED}),
    State.READY: frozenset({State.UNHEALTHY, State.STOPPING, State.FAILED}),
    State.UNHEALTHY: frozenset({State.READY, State.STOPPING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
    State.STOPPED: frozenset(),
    State.FAILED: frozenset(),
}
# States in which the replica holds its GPUs (allocated at STARTING, released at the end).
HOLDING_STATES = (State.STARTING, State.READY, State.UNHEALTHY, State.STOPPING)
# Serving or on its way: what counts against `replicas_wanted`.
COUNTED_STATES = (State.REQUESTED, State.QUEUED, State.STARTING, State.READY, State.UNHEALTHY)
# How many replicas may fail in a row before a deployment waits before the next start, and the
# longest it waits: 10 s, 20 s, 40 s ... up to 10 minutes after the last failure.
RESTART_BACKOFF_BASE_SECONDS = 10
RESTART_BACKOFF_MAX_SECONDS = 600


class IllegalTransition(ApplicationError):
    """A replica was asked to move to a state its state machine does not allow from here."""

    def __init__(self, replica: Replica, to: str):
        super().__init__(
            _("A replica cannot go from %(from)s to %(to)s.") % {"from": replica.state, "to": to},
            code="wrong_state",
        )
        self.from_state = replica.state
        self.to_state = to


def _move(replica: Replica, to: str, *, message: str = "", fields: tuple[str, ...] = ()) -> None:
    """Set the replica's state (checked against TRANSITIONS) and save it with `fields`."""
    if to not in TRANSITIONS[replica.state]:
        raise IllegalTransition(replica, to)
    replica.state = to
    if message:
        replica.message = message[:500]
    replica.save(update_fields=["state", "message", *fields, "updated_at"])


def _locked(replica_id: int) -> Replica | None:
    return (
        Replica.objects.select_for_update(of=("self",))
        .select_related("deployment", "deployment__model")
        .filter(pk=replica_id)
        .first()
    )


# --- Deployments: what a programme manager asks for -----------------------------------------


def _check_gpus_exist(*, gpus_per_replica: int, gpu_model: str) -> None:
    """Refuse a replica size this deployment could never place (it would wait forever, and
    hold up every sandbox of that kind of GPU behind it)."""
    if gpus_per_replica == 0:
        return
    devices = GpuDevice.objects.allocatable().of_kind(model=gpu_model)
    if devices.count() < gpus_per_replica:
        raise ApplicationError(
            _("This machine has fewer than %(n)d usable GPUs of that kind.")
            % {"n": gpus_per_replica},
            field="gpus_per_replica",
        )


def deployment_create(
    *, model, gpus_per_replica: int, replicas: int, gpu_model: str = "", acting_user
) -> Deployment:
    """Put a catalogue model into service: R replicas of N GPUs each (0: on CPU).

    Refusals raise ApplicationError and leave nothing behind. The replicas are placed at once
    (GPUs given, or in line for them); their containers start in Celery after the commit."""
    if not isinstance(gpus_per_replica, int) or not 0 <= gpus_per_replica <= 16:
        raise ApplicationError(_("GPUs per replica must be 0 to 16."), field="gpus_per_replica")
    if not isinstance(replicas, int) or not 0 <= replicas <= 64:
        raise ApplicationError(_("Replicas must be 0 to 64."), field="replicas")
    gpu_model = (gpu_model or "").strip()
    if not model.is_active:
        raise ApplicationError(_("This model is not offered."), field="model")
    if model.engine not in getattr(settings, "LLM_ENGINE_IMAGES", {}):
        raise ApplicationError(_("No engine image is configured for this model."), field="model")
    _check_gpus_exist(gpus_per_replica=gpus_per_replica, gpu_model=gpu_model)
    with transaction.atomic():
        try:
            with transaction.atomic():
                deployment = Deployment.objects.create(
                    model=model,
                    gpus_per_replica=gpus_per_replica,
                    gpu_model=gpu_model,
                    replicas_wanted=replicas,
                    created_by=acting_user,
                )
        except IntegrityError as exc:
            raise ApplicationError(
                _("This model is deployed already: scale its deployment instead."),
                code="conflict",
            ) from exc
        for _i in range(replicas):
            _replica_add(deployment)
        audit_record(
            actor=acting_user,
            action=AuditAction.LLM_DEPLOYMENT_CREATED,
            target=deployment,
            data={
                "model": model.name,
                "gpus_per_replica": gpus_per_replica,
                "gpu_model": gpu_model,
                "replicas": replicas,
            },
        )
    return deployment


def _locked_deployment(deployment: Deployment) -> Deployment:
    return (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("model")
        .get(pk=deployment.pk)
    )


def deployment_scale(*, deployment: Deployment, replicas: int, acting_user) -> Deployment:
    """Change how many replicas the deployment runs: new ones are placed at once, extra ones
    stopped newest first (one still waiting for GPUs before one that serves)."""
    if not isinstance(replicas, int) or not 0 <= replicas <= 64:
        raise ApplicationError(_("Replicas must be 0 to 64."), field="replicas")
    with transaction.atomic():
        locked = _locked_deployment(deployment)
        if locked.state != Deployment.State.ACTIVE:
            raise ApplicationError(_("This deployment is stopped."), code="wrong_state")
        before = locked.replicas_wanted
        locked.replicas_wanted = replicas
        locked.save(update_fields=["replicas_wanted", "updated_at"])
        _replicas_match(locked)
        audit_record(
            actor=acting_user,
            action=AuditAction.LLM_DEPLOYMENT_SCALED,
            target=locked,
            data={"model": locked.model.name, "from": before, "to": replicas},
        )
    return locked


def deployment_stop(*, deployment: Deployment, acting_user) -> Deployment:
    """Take the model out of service: every replica is stopped, its GPUs released. Idempotent
    for a deployment already stopped (nothing changes, nothing is audited)."""
    with transaction.atomic():
        locked = _locked_deployment(deployment)
        if locked.state == Deployment.State.STOPPED:
            return locked
        locked.state = Deployment.State.STOPPED
        locked.save(update_fields=["state", "updated_at"])
        live = locked.replicas.filter(state__in=COUNTED_STATES).order_by("-pk")
        for replica_id in live.values_list("pk", flat=True):
            _replica_stop(replica_id, message=_("The deployment was stopped."))
        audit_record(
            actor=acting_user,
            action=AuditAction.LLM_DEPLOYMENT_STOPPED,
            target=locked,
            data={"model": locked.model.name},
        )
    return locked


def _managed(deployment: Deployment):
    return deployment.replicas.filter(external=False)


def _replicas_match(deployment: Deployment) -> list[int]:
    """Start or stop the deployment's own replicas (never external ones) so that as many count
    as it wants. Returns the ids of replicas added. Runs under the deployment's lock."""
    counted = list(
        _managed(deployment).filter(state__in=COUNTED_STATES).order_by("-pk").values("pk", "state")
    )
    missing = deployment.replicas_wanted - len(counted)
    if missing < 0:
        # Newest first, but one that does not serve yet goes before one that does.
        serving = (State.READY, State.UNHEALTHY)
        extra = sorted(counted, key=lambda r: r["state"] in serving)[:-missing]
        for row in extra:
            _replica_stop(row["pk"], message=_("Scaled down."))
        return []
    return [_replica_add(deployment).pk for _i in range(missing)]


# --- Placing a replica: GPUs now, or in line --------------------------------------------------


def _replica_add(deployment: Deployment) -> Replica:
    # Hex, not URL-safe base64: the engine's command line would read a key that begins with
    # "-" as an option and refuse to start (1 replica in 64).
    replica = Replica.objects.create(deployment=deployment, api_key=secrets.token_hex(32))
    _place(replica)
    return replica


def _kind_overlaps(model_field: str, gpu_model: str) -> Q:
    """Devices asked for as `gpu_model` ('' = any model) can be the devices asked for by the
    rows whose `model_field` matches this."""
    if not gpu_model:
        return Q()
    return Q(**{model_field: gpu_model}) | Q(**{model_field: ""})


def _sandboxes_ahead(*, gpu_model: str, since: dt.datetime) -> bool:
    """A queued sandbox of an overlapping kind of whole GPU has waited longer than `since` and
    is held back only by free devices (one held by its holder's GPU cap blocks nobody, as in
    the launcher's own queue)."""
    ahead = (
        Sandbox.objects.filter(
            status=Sandbox.Status.QUEUED,
            queued_at__lt=since,
            profile__gpu_count__gt=0,
            profile__mig_profile="",
        )
        .filter(_kind_overlaps("profile__gpu_model", gpu_model))
        .select_related("profile", "organisation")
    )
    return any(not over_gpu_cap(sandbox) for sandbox in ahead)


def _replicas_ahead(replica: Replica, *, since: dt.datetime) -> bool:
    return (
        Replica.objects.filter(state=State.QUEUED, queued_at__lt=since)
        .exclude(pk=replica.pk)
        .filter(_kind_overlaps("deployment__gpu_model", replica.deployment.gpu_model))
        .exists()
    )


def _place(replica: Replica) -> None:
    """Starting if its GPUs are given now (or it needs none); queued otherwise."""
    deployment = replica.deployment
    count = deployment.gpus_per_replica
    if count == 0:
        _to_starting(replica, gpu_uuids=[])
        return
    now = timezone.now()
    uuids: list[str] = []
    if not _sandboxes_ahead(gpu_model=deployment.gpu_model, since=now) and not _replicas_ahead(
        replica, since=now
    ):
        uuids = gpus.gpu_allocate(replica=replica, count=count, model=deployment.gpu_model)
    if uuids:
        _to_starting(replica, gpu_uuids=uuids)
        return
    replica.queued_at = now
    _move(replica, State.QUEUED, message=_("Waiting for GPUs."), fields=("queued_at",))
    gpus.gpu_wait_join(replica=replica, count=count, model=deployment.gpu_model, queued_at=now)


def _to_starting(replica: Replica, *, gpu_uuids: list[str]) -> None:
    replica.started_at = timezone.now()
    replica.gpu_uuids = gpu_uuids
    _move(
        replica,
        State.STARTING,
        message=_("Starting the engine."),
        fields=("started_at", "gpu_uuids"),
    )
    enqueue_after_commit("deployments.replica_start", replica.pk)


def _queue_lock() -> None:
    """The sandboxes' queue lock (launcher.services._queue_lock): a replica's turn and a
    sandbox's turn are decided one at a time, so first come is first served across both."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('launcher.queue'))")


def replicas_queue_advance() -> list[int]:
    """Start queued replicas, oldest first, while GPUs of their kind are free and no sandbox of
    that kind has waited longer. Once the oldest of a kind cannot be served, nobody younger of
    that kind jumps ahead. Returns the ids started."""
    started: list[int] = []
    with transaction.atomic():
        _queue_lock()
        blocked: set[str] = set()
        queued = (
            Replica.objects.filter(state=State.QUEUED)
            .select_related("deployment", "deployment__model")
            .order_by("queued_at", "pk")
            .select_for_update(of=("self",))
        )
        for replica in queued:
            deployment = replica.deployment
            kind = deployment.gpu_model
            if kind in blocked or "" in blocked:
                continue
            since = replica.queued_at or timezone.now()
            uuids: list[str] = []
            if not _sandboxes_ahead(gpu_model=kind, since=since):
                uuids = gpus.gpu_allocate(
                    replica=replica, count=deployment.gpus_per_replica, model=kind
                )
            if not uuids:
                blocked.add(kind)
                continue
            gpus.gpu_wait_leave(replica=replica)
            _to_starting(replica, gpu_uuids=uuids)
            started.append(replica.pk)
    return started


# --- Ending a replica ---------------------------------------------------------------------------


def _end(replica: Replica, to: str, message: str) -> None:
    """Stopped or failed: its GPUs released (and the lines moved), its GPU time closed."""
    released = gpus.gpu_release(replica=replica)
    gpus.gpu_wait_leave(replica=replica)
    replica.stopped_at = timezone.now() if replica.started_at else None
    _move(replica, to, message=message, fields=("stopped_at",))
    if released:
        # The allocator's signal moves the replicas' line; the sandboxes' line moves here.
        enqueue_after_commit("launcher.queue_advance")


def _replica_stop(replica_id: int, *, message: str) -> None:
    """A replica waiting in line leaves it; one with a container is stopped in Celery."""
    replica = _locked(replica_id)
    if replica is None:
        return
    if replica.state in (State.REQUESTED, State.QUEUED):
        _end(replica, State.STOPPED, message)
    elif replica.state in (State.STARTING, State.READY, State.UNHEALTHY):
        _move(replica, State.STOPPING, message=message)
        enqueue_after_commit("deployments.replica_stop", replica.pk)


def replica_mark_stopped(*, replica_id: int, message: str = "") -> bool:
    """Its container is gone: GPUs released. Idempotent (False when it had ended already)."""
    with transaction.atomic():
        replica = _locked(replica_id)
        if replica is None or replica.state in (State.STOPPED, State.FAILED):
            return False
        if replica.state not in (State.STOPPING, State.REQUESTED, State.QUEUED):
            # A container that ends without being asked to is a failure, not a stop.
            _end(replica, State.FAILED, message or _("The engine stopped."))
            return True
        _end(replica, State.STOPPED, message or _("Stopped."))
    return True


def replica_mark_failed(*, replica_id: int, message: str) -> bool:
    """The engine could not start, or its container vanished: GPUs released, the reason kept.
    Idempotent (False when it had ended already)."""
    with transaction.atomic():
        replica = _locked(replica_id)
        if replica is None or replica.state in (State.STOPPED, State.FAILED):
            return False
        _end(replica, State.FAILED, message)
    logger.warning("replica %s failed: %s", replica_id, message)
    return True


def replica_container_started(
    *, replica_id: int, container_id: str, base_url: str, node: str = ""
) -> bool:
    """The engine's container runs: remember where. It becomes READY on its first good probe.
    False (and nothing recorded) when the replica is no longer starting: the caller removes
    the container."""
    with transaction.atomic():
        replica = _locked(replica_id)
        if replica is None or replica.state != State.STARTING:
            return False
        replica.container_id = container_id[:80]
        replica.base_url = base_url[:300]
        replica.node = (node or urlsplit(base_url).hostname or "")[:200]
        replica.message = _("Loading the model.")
        replica.save(update_fields=["container_id", "base_url", "node", "message", "updated_at"])
    return True


# --- Health -------------------------------------------------------------------------------------


def replica_probe_record(*, replica_id: int, failure: str) -> str | None:
    """Record one probe's verdict ('' = it answered). STARTING → READY and UNHEALTHY → READY on
    a success; READY → UNHEALTHY after LLM_HEALTH_FAILURES_TO_UNHEALTHY failures in a row.
    Returns the new state when it changed."""
    with transaction.atomic():
        replica = _locked(replica_id)
        if replica is None or replica.state not in (State.STARTING, State.READY, State.UNHEALTHY):
            return None
        now = timezone.now()
        if not failure:
            replica.health_failures = 0
            replica.last_healthy_at = now
            fields = ("health_failures", "last_healthy_at")
            if replica.state in (State.STARTING, State.UNHEALTHY):
                _move(replica, State.READY, message=_("Serving."), fields=fields)
                return State.READY
            replica.save(update_fields=[*fields, "updated_at"])
            return None
        return _failure_count(replica, failure)


def _failure_count(replica: Replica, failure: str) -> str | None:
    replica.health_failures = min(replica.health_failures + 1, 32767)
    if (
        replica.state == State.READY
        and replica.health_failures >= settings.LLM_HEALTH_FAILURES_TO_UNHEALTHY
    ):
        _move(replica, State.UNHEALTHY, message=failure, fields=("health_failures",))
        return State.UNHEALTHY
    replica.save(update_fields=["health_failures", "updated_at"])
    return None


def replica_unhealthy_report(*, replica_id: int, reason: str) -> str | None:
    """The gateway's passive health: a request to this replica failed before its first byte (no
    connection, or a 5xx). Counted as one failed probe, so a single bad request (llama.cpp
    answers some invalid parameters with 500) does not take a replica out of rotation, while
    LLM_HEALTH_FAILURES_TO_UNHEALTHY in a row do, without waiting for the next probe. Returns the
    new state when it changed; an unknown or ended replica is ignored."""
    with transaction.atomic():
        replica = _locked(replica_id)
        if replica is None or replica.state != State.READY:
            return None
        return _failure_count(replica, (reason or _("The gateway could not reach it."))[:500])


def _check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError(_("The base URL must be an http(s) URL."), field="base_url")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ApplicationError(
            _("The base URL must not carry credentials, a query or a fragment."),
            field="base_url",
        )
    return base_url.rstrip("/")


def replica_register_external(*, deployment: Deployment, base_url: str, api_key: str) -> Replica:
    """Register an engine the portal did not start (a test's engine process, a server run by
    hand) as a replica of an active deployment. It is probed once now: READY when it answers,
    else STARTING until the health beat's first good probe. The reconciler leaves it alone."""
    base_url = _check_base_url(base_url)
    if len(api_key or "") > 100:
        raise ApplicationError(_("The engine key is too long."), field="api_key")
    with transaction.atomic():
        locked = _locked_deployment(deployment)
        if locked.state != Deployment.State.ACTIVE:
            raise ApplicationError(_("This deployment is stopped."), code="wrong_state")
        replica = Replica.objects.create(
            deployment=locked,
            external=True,
            base_url=base_url,
            api_key=api_key or "",
            node=(urlsplit(base_url).hostname or "")[:200],
            started_at=timezone.now(),
        )
        _move(replica, State.STARTING, message=_("Registered; waiting for its first answer."))
    failure = engine_probe(base_url=base_url, api_key=api_key or "")
    replica_probe_record(replica_id=replica.pk, failure=failure)
    replica.refresh_from_db()
    return replica


# --- Restarts -----------------------------------------------------------------------------------


def restart_wait_seconds(*, deployment: Deployment, now: dt.datetime | None = None) -> int:
    """How long the deployment must still wait before a new replica after its replicas failed
    in a row: 10 s after one failure, doubling per failure, at most 10 minutes. 0 when its
    latest ended replica did not fail."""
    now = now or timezone.now()
    ended = _managed(deployment).filter(state__in=(State.STOPPED, State.FAILED))
    recent = list(ended.order_by("-updated_at", "-pk").values_list("state", "updated_at")[:8])
    failures = 0
    for state, _at in recent:
        if state != State.FAILED:
            break
        failures += 1
    if failures == 0:
        return 0
    wait = min(RESTART_BACKOFF_BASE_SECONDS * 2 ** (failures - 1), RESTART_BACKOFF_MAX_SECONDS)
    elapsed = (now - recent[0][1]).total_seconds()
    return max(0, int(wait - elapsed))


def deployment_reconcile(*, deployment_id: int) -> list[int]:
    """Bring one deployment to what it wants: a stopped one's replicas stopped; an active one's
    missing replicas added (after the restart back-off when replicas keep failing), extra ones
    stopped. Returns the ids of replicas added."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("model")
            .filter(pk=deployment_id)
            .first()
        )
        if deployment is None:
            return []
        if deployment.state == Deployment.State.STOPPED:
            for replica_id in deployment.replicas.filter(state__in=COUNTED_STATES).values_list(
                "pk", flat=True
            ):
                _replica_stop(replica_id, message=_("The deployment was stopped."))
            return []
        counted = _managed(deployment).filter(state__in=COUNTED_STATES).count()
        if counted < deployment.replicas_wanted and restart_wait_seconds(deployment=deployment):
            return []
        return _replicas_match(deployment)
