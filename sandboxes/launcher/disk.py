"""Home folder quotas: measure each person's home volume, warn near a profile's quota, refuse a
start over it.

A home volume outlives its sandboxes and is shared by all of them, so the quota is checked when a
sandbox starts (the profile chosen says how much home it may bring), not while it runs: Docker
has no size limit for a named local volume. Sizes come from the engine's own accounting
(`docker system df -v`), measured on beat (`launcher.home_usage_measure`); a person never
measured has no recorded usage and is not refused.
"""

from __future__ import annotations

import logging
from contextlib import closing

from django.conf import settings
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.core.exceptions import PermissionDenied
from portal.core.mail import mail_send_after_commit
from portal.users.models import User

from . import docker_client
from .models import HomeUsage, ResourceProfile

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
WARN_FRACTION = 0.8  # warned from here; refused from the quota itself


def volume_sizes() -> dict[str, int]:
    """Volume name → bytes, for the home volumes the engine knows."""
    prefix = settings.SANDBOX_HOME_VOLUME_PREFIX
    with closing(docker_client.client()) as engine:
        volumes = engine.df().get("Volumes") or []
    return {
        v["Name"]: int((v.get("UsageData") or {}).get("Size", -1))
        for v in volumes
        if v["Name"].startswith(prefix) and (v.get("UsageData") or {}).get("Size", -1) >= 0
    }


def _smallest_quota_bytes() -> int | None:
    quotas = ResourceProfile.objects.filter(is_active=True, home_quota_mib__gt=0).values_list(
        "home_quota_mib", flat=True
    )
    return min(quotas) * MIB if quotas else None


def home_usage_measure() -> dict:
    """Record every home volume's size; e-mail once a person crosses 80% of the smallest quota
    a profile on offer has (some starts will soon be refused)."""
    sizes = volume_sizes()
    prefix = settings.SANDBOX_HOME_VOLUME_PREFIX
    users = User.objects.filter(hub_username__in=[name[len(prefix) :] for name in sizes])
    now = timezone.now()
    smallest = _smallest_quota_bytes()
    warned = 0
    for user in users:
        volume = f"{prefix}{user.hub_username}"
        size = sizes[volume]
        with transaction.atomic():
            usage, _created = HomeUsage.objects.select_for_update().get_or_create(
                user=user, defaults={"volume": volume, "bytes": size, "measured_at": now}
            )
            usage.volume, usage.bytes, usage.measured_at = volume, size, now
            near = smallest is not None and size >= WARN_FRACTION * smallest
            if near and usage.warned_at is None and user.email:
                usage.warned_at = now
                warned += 1
                mail_send_after_commit(
                    template="sandboxes/email/home_near_quota",
                    to=user.email,
                    language=user.language,
                    context={"used": filesizeformat(size), "quota": filesizeformat(smallest)},
                )
            elif not near:
                usage.warned_at = None
            usage.save()
    logger.info("measured %d home volumes, %d owners warned", len(sizes), warned)
    return {"measured": len(sizes), "warned": warned}


def home_quota_check(*, user: User, profile: ResourceProfile) -> str:
    """Refuse a start whose home folder is over the profile's quota; otherwise the warning to
    show ("" when there is none)."""
    if not profile.home_quota_mib:
        return ""
    used = HomeUsage.objects.filter(user=user).values_list("bytes", flat=True).first()
    if used is None:
        return ""
    quota = profile.home_quota_mib * MIB
    figures = {"used": filesizeformat(used), "quota": filesizeformat(quota)}
    figures["profile"] = profile.name
    if used > quota:
        raise PermissionDenied(
            _(
                "Your home folder holds %(used)s, over the %(quota)s that %(profile)s allows: "
                "start a profile with a larger quota and delete files, or delete your home "
                "folder from this page."
            )
            % figures
        )
    if used >= WARN_FRACTION * quota:
        return (
            _(
                "Your home folder holds %(used)s of the %(quota)s that %(profile)s allows; over "
                "it, starts are refused."
            )
            % figures
        )
    return ""
