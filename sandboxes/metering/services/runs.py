"""Runs: a sandbox's allocated time, from `starting` (its resources are allocated) to its
release. The launcher opens and closes them; the tick charges them."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Exists, OuterRef

from sandboxes.jobs import enqueue_after_commit
from sandboxes.launcher.models import Sandbox

from ..models import SandboxRun


def run_open(*, sandbox: Sandbox, at: dt.datetime) -> SandboxRun:
    """The sandbox's resources are allocated (it is `starting`): its allocated time starts
    counting, whether or not the server ever becomes ready (a start that fails is charged up to
    its failure). Called inside the transaction that allocates; idempotent (one open run per
    sandbox, enforced by the database)."""
    existing = SandboxRun.objects.filter(sandbox=sandbox, ended_at__isnull=True).first()
    if existing is not None:
        return existing
    return SandboxRun.objects.create(
        sandbox=sandbox,
        account_id=sandbox.account_id,
        rate_millicredits=sandbox.profile.charge_millicredits_per_second,
        interval_seconds=settings.METERING_INTERVAL,
        started_at=at,
        charged_until=at,
    )


def run_close(*, sandbox: Sandbox, at: dt.datetime) -> SandboxRun | None:
    """The GPUs are released: the run ends and its last partial interval is charged right after
    the commit (the next tick would catch it too)."""
    run = SandboxRun.objects.filter(sandbox=sandbox, ended_at__isnull=True).first()
    if run is None:
        return None
    run.ended_at = max(at, run.started_at)
    run.save(update_fields=["ended_at", "updated_at"])
    enqueue_after_commit("metering.run_settle", run.pk)
    return run


def runs_open_missing(now: dt.datetime) -> None:
    """A sandbox holding its resources (starting, running or stopping) without an open run (it
    started before metering existed, or its run was never opened): count it from its start."""
    open_run = SandboxRun.objects.filter(sandbox=OuterRef("pk"), ended_at__isnull=True)
    held = [Sandbox.Status.STARTING, Sandbox.Status.RUNNING, Sandbox.Status.STOPPING]
    missing = list(
        Sandbox.objects.filter(status__in=held).filter(~Exists(open_run)).select_related("profile")
    )
    if missing:
        SandboxRun.objects.bulk_create(
            [
                SandboxRun(
                    sandbox=s,
                    account_id=s.account_id,
                    rate_millicredits=s.profile.charge_millicredits_per_second,
                    interval_seconds=settings.METERING_INTERVAL,
                    started_at=s.starting_at or s.running_at or now,
                    charged_until=s.starting_at or s.running_at or now,
                )
                for s in missing
            ],
            ignore_conflicts=True,
        )
