"""The tick: one pass of metering over every unsettled run (the steps and their order are in
the package's docstring). It takes the tick lock, reads the runs, and calls each step, which
returns its figures and its live messages; the messages of the whole tick go out in one send."""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.live import broadcast

from ..models import SandboxRun
from . import billing, enforcement, rollups, sampling
from .runs import runs_open_missing

# What the tick reads of a run and the rows beside it, and nothing else: at a thousand runs,
# turning every other column (a dozen timestamps, the sandbox's status parameters) into Python
# cost more than the query. A step that needs another field adds it here; one it forgot would
# be read run by run, which the query-count test catches.
_RUN_FIELDS = (
    *(
        f.name
        for f in SandboxRun._meta.concrete_fields
        if f.name not in ("created_at", "updated_at")
    ),
    "sandbox__public_id",
    "sandbox__server_name",
    "sandbox__name",
    "sandbox__user__name",
    "sandbox__user__email",
    "sandbox__organisation__legal_name",
    "sandbox__profile__name",
    "sandbox__image__name",
)

TICK_LOCK = 0x6E61_6301  # "nac\x01": the advisory lock key of metering ticks
_local_lock = threading.Lock()  # SQLite has no advisory locks: one tick per process at a time


@dataclass
class TickResult:
    """What a tick did: each step returns its own figures, gathered here."""

    skipped: bool = False
    runs: int = 0
    samples: int = 0
    intervals: int = 0
    charged: int = 0
    unpaid: int = 0
    countdowns: list[str] = field(default_factory=list)
    messages: int = 0


@contextmanager
def _tick_lock(*, wait: bool) -> Iterator[bool]:
    if connection.vendor != "postgresql":
        got = _local_lock.acquire(blocking=wait)
        try:
            yield got
        finally:
            if got:
                _local_lock.release()
        return
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s)", [TICK_LOCK])
            got = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [TICK_LOCK])
            got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [TICK_LOCK])


def tick(
    *,
    now: dt.datetime | None = None,
    sample: bool = True,
    wait: bool = False,
    run_ids: list[int] | None = None,
) -> TickResult:
    """One metering tick (see the module's docstring). `run_ids` limits it to some runs and
    `sample=False` skips telemetry: that is how an ended run is settled at once."""
    with _tick_lock(wait=wait) as got:
        if not got:
            return TickResult(skipped=True)
        # `now` is read after the lock and before the runs: a run that ends after this read is
        # seen open, and is only charged for slots that were over before it ended.
        now = now or timezone.now()
        return _tick(now=now, sample=sample, run_ids=run_ids)


def _tick(*, now: dt.datetime, sample: bool, run_ids: list[int] | None) -> TickResult:
    if run_ids is None:
        runs_open_missing(now)
    runs = (
        SandboxRun.objects.filter(settled=False)
        .select_related(
            "sandbox__user", "sandbox__profile", "sandbox__image", "sandbox__organisation"
        )
        .only(*_RUN_FIELDS)
    )
    if run_ids is not None:
        runs = runs.filter(pk__in=run_ids)
    runs = list(runs.order_by("pk"))
    charged = billing.charge(runs, now=now)
    enforced = enforcement.enforce(
        runs, shortfall=charged.shortfall, warnings=charged.warnings, now=now
    )
    messages = enforced.messages
    samples = 0
    if sample:
        held = _held_devices([r.sandbox_id for r in runs if r.ended_at is None])
        sampled = sampling.sample(runs, held=held, now=now)
        samples, messages = sampled.samples, messages + sampled.messages
        rollups.rollups_refresh(now)
    return TickResult(
        runs=len(runs),
        samples=samples,
        intervals=charged.intervals,
        charged=charged.charged,
        unpaid=charged.unpaid,
        countdowns=enforced.countdowns,
        messages=broadcast.send_after_commit(messages),
    )


def _held_devices(sandbox_ids: list[int]) -> dict[int, list[GpuDevice]]:
    held: dict[int, list[GpuDevice]] = defaultdict(list)
    if sandbox_ids:
        for allocation in GpuAllocation.objects.filter(
            sandbox_id__in=sandbox_ids, released_at__isnull=True
        ).select_related("device"):
            held[allocation.sandbox_id].append(allocation.device)
    return held
