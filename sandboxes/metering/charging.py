"""What a run owes, interval by interval, and what the ledger records about each interval's
charge. Pure arithmetic, no database.

Time is cut on a grid of `interval_seconds` counted from the Unix epoch, so every process slices a
run the same way and an interval's start names it. A run owes, up to an instant t,

    owed(t) = rate_millicredits × (t − started_at in whole milliseconds) // 1_000_000

credit-seconds (integers, never floats). One interval is charged owed(its end) − owed(its start),
clipped to the run, so the charges of a run always add up to exactly owed(end): the sum never
drifts from rate × allocated time by rounding, however the run is sliced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portal.credits.charge_metadata import ChargeMetadata

if TYPE_CHECKING:
    from .models import SandboxRun, UsageCharge

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Interval:
    start: dt.datetime  # the grid slot's start: part of the idempotency key
    begins: dt.datetime  # max(slot start, run start)
    ends: dt.datetime  # min(slot end, run end or now)
    milliseconds: int
    due: int  # credit-seconds


def milliseconds_between(earlier: dt.datetime, later: dt.datetime) -> int:
    delta = later - earlier
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def owed(*, rate_millicredits: int, started_at: dt.datetime, until: dt.datetime) -> int:
    """Credit-seconds a run owes from its start to `until`."""
    elapsed = max(0, milliseconds_between(started_at, until))
    return rate_millicredits * elapsed // 1_000_000


def slot_start(at: dt.datetime, interval_seconds: int) -> dt.datetime:
    seconds = int((at - EPOCH).total_seconds())
    return EPOCH + dt.timedelta(seconds=seconds - seconds % interval_seconds)


def intervals_due(
    *,
    rate_millicredits: int,
    interval_seconds: int,
    started_at: dt.datetime,
    charged_until: dt.datetime,
    ended_at: dt.datetime | None,
    now: dt.datetime,
) -> Iterator[Interval]:
    """The intervals from `charged_until` on that are complete: every slot that ended by `now`,
    and, once the run has ended, its last partial slot as well."""
    end = ended_at if ended_at is not None else slot_start(now, interval_seconds)
    step = dt.timedelta(seconds=interval_seconds)
    cursor = max(charged_until, started_at)
    while cursor < end:
        slot = slot_start(cursor, interval_seconds)
        ends = min(slot + step, end)
        before = owed(rate_millicredits=rate_millicredits, started_at=started_at, until=cursor)
        after = owed(rate_millicredits=rate_millicredits, started_at=started_at, until=ends)
        yield Interval(
            start=slot,
            begins=cursor,
            ends=ends,
            milliseconds=milliseconds_between(cursor, ends),
            due=after - before,
        )
        cursor = ends


def charge_key(run_public_id, slot: dt.datetime) -> str:
    return f"usage:{run_public_id}:{int((slot - EPOCH).total_seconds())}"


def charge_metadata(charge: UsageCharge, run: SandboxRun) -> ChargeMetadata:
    """The ledger's record of one interval's charge of `run` (its sandbox, profile and image
    already loaded): statements group usage by sandbox and profile, reconciliation sums it by
    run."""
    sandbox = run.sandbox
    return ChargeMetadata(
        sandbox=str(sandbox.public_id),
        sandbox_name=sandbox.display_name,
        profile=sandbox.profile.name,
        run=str(run.public_id),
        interval_start=charge.interval_start,
        milliseconds=charge.milliseconds,
        due=charge.due,
    )
