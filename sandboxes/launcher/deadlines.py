"""Stops on a deadline, which the launcher's beat tasks enforce: a sandbox past its profile's
maximum age, and a sandbox whose stop countdown (recorded by the metering tick when its account
ran out of credits) is over. Each is stopped through `services.sandbox_stop` (its home volume
stays) with a message that tells the person why."""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError
from sandboxes.metering.selectors import sandbox_ids_out_of_credits

from . import services
from .models import Sandbox
from .status_messages import note

logger = logging.getLogger(__name__)
Status = Sandbox.Status


def sandboxes_stop_over_age(*, now: dt.datetime | None = None) -> list[Sandbox]:
    """Stop every sandbox that has held its resources longer than its profile's maximum age
    (counted from its start, as it is charged); its home volume stays, and the stop message
    tells the person why. Returns those asked to stop."""
    now = now or timezone.now()
    candidates = Sandbox.objects.filter(
        status__in=[Status.STARTING, Status.RUNNING],
        profile__max_age_seconds__isnull=False,
        starting_at__isnull=False,
    ).select_related("profile")
    stopped = []
    for sandbox in candidates.order_by("starting_at", "pk"):
        max_age = sandbox.profile.max_age_seconds
        if now - sandbox.starting_at < dt.timedelta(seconds=max_age):
            continue
        reason = note("max_age", max_age_seconds=max_age)
        try:
            with transaction.atomic():
                locked = services.sandbox_stop(sandbox=sandbox, acting_user=None, reason=reason)
                audit_record(
                    actor=None,
                    action=AuditAction.SANDBOX_MAX_AGE_REACHED,
                    target=locked,
                    data={
                        "max_age_seconds": max_age,
                        "started_at": sandbox.starting_at.isoformat(),
                    },
                )
        except ApplicationError:  # it ended on its own in the meantime
            continue
        stopped.append(locked)
    return stopped


def sandboxes_stop_out_of_credits(*, now: dt.datetime | None = None) -> list[Sandbox]:
    """Stop every starting or running sandbox whose stop countdown is over: the metering tick
    started it when the account ran dry (and lifts it when credits come back), and only records
    it. Runs on beat as often as the tick, so a sandbox stops at most one interval late. One
    already stopping is not asked again. Returns those asked to stop."""
    now = now or timezone.now()
    due = Sandbox.objects.filter(
        pk__in=sandbox_ids_out_of_credits(now=now), status__in=[Status.STARTING, Status.RUNNING]
    )
    stopped = []
    for sandbox in due.order_by("pk"):
        try:
            with transaction.atomic():
                stopped.append(
                    services.sandbox_stop(
                        sandbox=sandbox, acting_user=None, reason=note("out_of_credits")
                    )
                )
        except ApplicationError:  # it ended on its own in the meantime
            continue
        except Exception:  # one that cannot be stopped must not keep the others running
            logger.exception("could not stop sandbox %s at the end of its credits", sandbox)
    return stopped
