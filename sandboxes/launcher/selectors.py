"""Reads for the launch picker and the sandbox lists (HTML pages and API alike)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from portal.core.exceptions import ApplicationError
from sandboxes.gpus.selectors import free_count

from .hub_urls import server_url
from .models import ResourceProfile, Sandbox, SandboxImage
from .services import Holder, age_label, holder_for, profile_allowed, runway_seconds


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
