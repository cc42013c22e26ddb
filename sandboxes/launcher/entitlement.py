"""Entitlement: who may launch what, and what the hub may start.

- `launch_check`: the rules a launch or a restart must pass (an active person and organisation,
  an offered image and profile, the audience, the GPU cap, enough credits for the minimum
  runway, the home folder's quota, no start already under way, the live-sandbox limit, the
  failed-starts pause). Read under the person's row lock, which the services hold.
- `spawn_spec`: what the spawner asks before every start (through the internal API,
  internal.py), exactly what the portal authorised and nothing else.
"""

from __future__ import annotations

import datetime as dt
import math

from django.conf import settings
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.organisations.models import Organisation
from portal.users.models import User
from sandboxes.gpus.models import GpuDevice
from sandboxes.gpus.selectors import inventory_is_simulated, uuids_held_by

from .disk import home_quota_check
from .models import Audience, ResourceProfile, Sandbox, SandboxImage, SandboxStart
from .selectors import Holder, current_start_id, home_volume, profile_allowed, runway_seconds

Status = Sandbox.Status


# --- Who may launch what ---------------------------------------------------------------------


def already_starting() -> ApplicationError:
    return ApplicationError(
        _("A sandbox of yours is already starting; wait until it is ready."), code="wrong_state"
    )


def launch_check(*, user, holder: Holder, image: SandboxImage, profile: ResourceProfile):
    # Read again under the person's row lock (the callers hold it): a suspension that committed
    # meanwhile wins, and one in progress waits for this launch and then stops what it made
    # (suspensions lock the same rows before they look for live sandboxes).
    if not User.objects.filter(pk=user.pk, is_active=True).exists():
        raise PermissionDenied(_("This account is suspended; sandboxes cannot be launched."))
    if (
        holder.organisation is not None
        and not Organisation.objects.filter(pk=holder.organisation.pk, is_active=True).exists()
    ):
        raise PermissionDenied(_("This organisation is suspended; sandboxes cannot be launched."))
    if (
        holder.organisation is not None
        and not Organisation.objects.for_user(user).filter(pk=holder.organisation.pk).exists()
    ):  # removed meanwhile (leaving.organisation_sandboxes_enforce holds the same lock)
        raise PermissionDenied(_("You are not a member of that organisation."))
    _failed_starts_check(user=user)
    if not image.is_active:
        raise ApplicationError(_("That image is not offered."), field="image")
    if not profile.is_active:
        raise ApplicationError(_("That resource profile is not offered."), field="profile")
    # On simulated GPUs every sandbox runs on the CPU, so any image will do.
    if profile.gpu_count and not image.gpu_capable and not inventory_is_simulated():
        raise ApplicationError(
            _("%(image)s cannot use GPUs; choose a GPU image or a CPU profile.")
            % {"image": image.name},
            field="image",
        )
    if not profile_allowed(profile=profile, holder=holder):
        raise PermissionDenied(
            _("The %(profile)s profile is not available to %(who)s.")
            % {"profile": profile.name, "who": Audience(profile.audience).label.lower()}
        )
    cap = settings.SANDBOX_MAX_GPUS_PER_HOLDER
    if cap and profile.gpu_count > cap:
        raise ApplicationError(
            _("This profile needs %(n)s GPUs; at most %(cap)s may be held at once.")
            % {"n": profile.gpu_count, "cap": cap},
            field="profile",
        )
    minimum = settings.SANDBOX_MIN_RUNWAY_MINUTES * 60
    runway = runway_seconds(account=holder.account, profile=profile)
    if runway < minimum:
        raise ApplicationError(
            _(
                "Not enough credits: %(who)s can run this profile for %(have)s minutes, and a "
                "launch needs at least %(need)s minutes."
            )
            % {"who": holder.label, "have": runway // 60, "need": minimum // 60},
            code="insufficient_credits",
            field="profile",
        )
    home_quota_check(user=user, profile=profile)
    live = Sandbox.objects.filter(user=user, status__in=Sandbox.LIVE)
    if live.filter(status__in=[Status.REQUESTED, Status.STARTING]).exists():
        raise already_starting()
    if live.count() >= settings.SANDBOX_MAX_LIVE_PER_USER:
        raise ApplicationError(
            _("You have %(n)s sandboxes running or waiting; stop one first.") % {"n": live.count()},
            code="wrong_state",
        )


def _failed_starts_check(*, user) -> None:
    """Starts that keep failing still hold GPUs while they fail (and are charged for it): after
    SANDBOX_FAILED_STARTS_LIMIT failures within the window, the person waits until the oldest of
    them leaves the window."""
    limit = settings.SANDBOX_FAILED_STARTS_LIMIT
    if not limit:
        return
    window = dt.timedelta(seconds=settings.SANDBOX_FAILED_STARTS_WINDOW_SECONDS)
    now = timezone.now()
    recent = list(
        SandboxStart.objects.filter(
            user=user, outcome=SandboxStart.Outcome.FAILED, ended_at__gt=now - window
        )
        .order_by("-ended_at")
        .values_list("ended_at", flat=True)[:limit]
    )
    if len(recent) < limit:
        return
    retry_at = recent[-1] + window
    wait_minutes = max(1, math.ceil((retry_at - now).total_seconds() / 60))
    raise ApplicationError(
        _(
            "%(count)s starts of your sandboxes failed in the last %(window)s minutes, so "
            "launches are paused: you may try again at %(time)s (in %(wait)s)."
        )
        % {
            "count": len(recent),
            "window": settings.SANDBOX_FAILED_STARTS_WINDOW_SECONDS // 60,
            "time": formats.time_format(timezone.localtime(retry_at), "H:i"),
            "wait": ngettext("%(n)s minute", "%(n)s minutes", wait_minutes) % {"n": wait_minutes},
        },
        code="rate_limited",
    )


# --- What the hub may start ---------------------------------------------------------------


class SpawnRefused(Exception):
    """The hub asked to start something the portal did not authorise."""


def spawn_spec(*, hub_username: str, server_name: str) -> dict:
    """What the hub may start for this server, exactly; refused unless the portal itself asked
    for this start (the sandbox is `starting`)."""
    sandbox = (
        Sandbox.objects.select_related("user", "image", "profile")
        .filter(server_name=server_name, user__hub_username=hub_username)
        .first()
    )
    if sandbox is None:
        raise SpawnRefused(
            _("This server was not launched from the portal. Launch sandboxes from the portal.")
        )
    if sandbox.status != Status.STARTING:
        raise SpawnRefused(
            _("The portal has not authorised a start of this sandbox (it is %(status)s).")
            % {"status": sandbox.get_status_display().lower()}
        )
    if not sandbox.user.is_active:
        raise SpawnRefused(_("This account is disabled."))
    profile = sandbox.profile
    uuids = uuids_held_by(sandbox=sandbox)
    if len(uuids) != profile.gpu_count:
        raise SpawnRefused(_("The GPUs for this sandbox are not allocated."))
    mib = 1024 * 1024
    # Simulated GPUs are bookkeeping only: the container gets no device (there is none), and
    # learns which pretend GPUs it holds from the environment.
    simulated = GpuDevice.objects.filter(uuid__in=uuids, simulated=True).exists()
    environment = {"NAC_SANDBOX_ID": str(sandbox.public_id), "NAC_PROFILE": profile.slug}
    if simulated:
        environment["NAC_SIMULATED_GPUS"] = ",".join(uuids)
    start = current_start_id(sandbox=sandbox)
    return {
        "version": 1,
        "sandbox": str(sandbox.public_id),
        # Which start this is: the spawner sends it back with server-stopped.
        "start": str(start) if start else "",
        "image": sandbox.image.image,
        "cpu_limit": float(profile.cpu_cores),
        "mem_limit_bytes": profile.memory_mib * mib,
        "shm_size_bytes": profile.shm_mib * mib,
        "pids_limit": profile.pids_limit,
        "disk_bytes": profile.disk_mib * mib,  # 0: no limit
        "gpu_uuids": [] if simulated else uuids,
        "volume": home_volume(sandbox.user),
        "egress": profile.egress,
        "environment": environment,
        "labels": {
            "nac.sandbox": str(sandbox.public_id),
            "nac.user": sandbox.user.hub_username,
            "nac.profile": profile.slug,
        },
    }
