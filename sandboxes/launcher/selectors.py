"""What the launcher reads: who pays for a launch and how long their credits last, the queue,
the launch picker, the sandbox lists (HTML pages and API alike), the hub's names for things.
Nothing here writes; the writes are in services.py."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Sum
from django.utils.translation import gettext as _

from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.credits.models import CreditAccount
from portal.credits.selectors import account_of, available_credit_seconds
from portal.organisations.models import Organisation
from portal.users.models import User
from sandboxes.gpus.models import GpuAllocation
from sandboxes.gpus.selectors import free_count

from .hub_urls import server_url
from .models import Audience, ResourceProfile, Sandbox, SandboxImage, SandboxStart
from .status_messages import age_label

Status = Sandbox.Status


# --- Who pays --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Whose credits a sandbox burns: an organisation's, or a student's own."""

    organisation: Organisation | None
    account: CreditAccount | None
    audience: str  # Audience.STUDENTS or Audience.STARTUPS

    @property
    def label(self) -> str:
        return str(self.organisation) if self.organisation else _("your student allowance")


def holder_for(*, user: User, organisation: Organisation | None = None) -> Holder:
    """The organisation named (the person must belong to it), else the person's student account,
    else their only organisation."""
    if organisation is None:
        if hasattr(user, "student_profile"):
            account = account_of(user=user)
            return Holder(None, account, Audience.STUDENTS)
        memberships = list(Organisation.objects.for_user(user)[:2])
        if len(memberships) > 1:
            raise ApplicationError(
                _("You belong to several organisations: choose which one pays."),
                field="organisation",
            )
        if not memberships:
            raise PermissionDenied(
                _("Finish onboarding as a startup or a student before launching a sandbox.")
            )
        organisation = memberships[0]
    elif not Organisation.objects.for_user(user).filter(pk=organisation.pk).exists():
        raise PermissionDenied(
            _("You are not a member of that organisation."),
        )
    if not organisation.is_active:
        raise PermissionDenied(_("This organisation is suspended; sandboxes cannot be launched."))
    account = account_of(organisation=organisation)
    return Holder(organisation, account, Audience.STARTUPS)


def profile_allowed(*, profile: ResourceProfile, holder: Holder) -> bool:
    return profile.audience in (Audience.BOTH, holder.audience)


def burn_rate_millicredits(*, account: CreditAccount, extra: int = 0) -> int:
    """What the account's live sandboxes charge per second (in thousandths), plus `extra`."""
    live = Sandbox.objects.filter(account=account, status__in=Sandbox.LIVE)
    current = live.aggregate(rate=Sum("profile__charge_millicredits_per_second"))["rate"] or 0
    return current + extra


def runway_seconds(*, account: CreditAccount | None, profile: ResourceProfile) -> int:
    """How long the account could run this profile, alongside what it already runs."""
    if account is None:
        return 0
    rate = burn_rate_millicredits(account=account, extra=profile.charge_millicredits_per_second)
    return available_credit_seconds(account=account) * 1000 // rate


# --- The queue -------------------------------------------------------------------------------


def over_gpu_cap(sandbox: Sandbox) -> bool:
    """Would this sandbox take its holder (organisation or student) past the GPU cap?"""
    cap = settings.SANDBOX_MAX_GPUS_PER_HOLDER
    if not cap:
        return False
    held = GpuAllocation.objects.filter(
        released_at__isnull=True, sandbox__account=sandbox.account
    ).count()
    return held + sandbox.profile.gpu_count > cap


def queued_ahead(sandbox: Sandbox):
    """Queued sandboxes that wait for the same kind of GPU and came first."""
    ahead = Sandbox.objects.filter(
        status=Status.QUEUED,
        profile__gpu_model=sandbox.profile.gpu_model,
        profile__mig_profile=sandbox.profile.mig_profile,
    ).exclude(pk=sandbox.pk)
    if sandbox.queued_at:
        ahead = ahead.filter(queued_at__lt=sandbox.queued_at)
    return ahead


def queue_position(sandbox: Sandbox) -> int | None:
    """1 for the next in line (for its kind of GPU); None when not queued."""
    if sandbox.status != Status.QUEUED:
        return None
    return queued_ahead(sandbox).count() + 1


# --- The hub's names for things --------------------------------------------------------------


def home_volume(user: User) -> str:
    return f"{settings.SANDBOX_HOME_VOLUME_PREFIX}{user.hub_username}"


def sandbox_for_server(*, hub_username: str, server_name: str) -> Sandbox | None:
    return Sandbox.objects.filter(server_name=server_name, user__hub_username=hub_username).first()


def current_start_id(*, sandbox: Sandbox):
    """The public id of the sandbox's current start (the one not yet ended), or None."""
    return (
        SandboxStart.objects.filter(sandbox=sandbox, ended_at__isnull=True)
        .values_list("public_id", flat=True)
        .first()
    )


# --- The launch picker and the lists ---------------------------------------------------------


@dataclass(frozen=True)
class ProfileChoice:
    profile: ResourceProfile
    allowed: bool
    free_gpus: int | None  # None for CPU-only profiles
    runway_seconds: int

    @property
    def runway_ok(self) -> bool:
        return self.runway_seconds >= settings.SANDBOX_MIN_RUNWAY_MINUTES * 60

    @property
    def max_age_label(self) -> str:
        """ "2 hours" when the profile's sandboxes stop at a maximum age, else ""."""
        seconds = self.profile.max_age_seconds
        return age_label(seconds) if seconds else ""


@dataclass(frozen=True)
class LaunchChoices:
    holder: Holder | None
    problem: str  # why nothing can be launched at all, or ""
    images: list[SandboxImage]
    profiles: list[ProfileChoice]


def launch_choices(*, user, organisation=None) -> LaunchChoices:
    images = list(SandboxImage.objects.filter(is_active=True))
    try:
        holder = holder_for(user=user, organisation=organisation)
    except ApplicationError as exc:
        return LaunchChoices(None, exc.message, images, [])
    choices = []
    for profile in ResourceProfile.objects.filter(is_active=True):
        if not profile_allowed(profile=profile, holder=holder):
            continue
        free = (
            free_count(model=profile.gpu_model, mig_profile=profile.mig_profile)
            if profile.gpu_count
            else None
        )
        choices.append(
            ProfileChoice(
                profile=profile,
                allowed=True,
                free_gpus=free,
                runway_seconds=runway_seconds(account=holder.account, profile=profile),
            )
        )
    return LaunchChoices(holder, "", images, choices)


def open_url(sandbox: Sandbox) -> str:
    """The named server's own address. (JupyterHub's /hub/user-redirect/ resolves to the
    person's default server, which the portal never starts; the browser test caught it.) A
    browser not yet signed in to the hub goes through the portal's OIDC and comes back here."""
    return server_url(sandbox.user.hub_username, sandbox.server_name) + "lab"


def sandboxes_for_user(*, user):
    return (
        Sandbox.objects.for_user(user)
        .select_related("user", "image", "profile", "organisation")
        .prefetch_related("gpu_allocations__device")
    )


def sandbox_for_user(*, user, public_id) -> Sandbox | None:
    """One of the person's own sandboxes (None for anyone else's: the pages answer 404)."""
    return sandboxes_for_user(user=user).filter(public_id=public_id).first()
