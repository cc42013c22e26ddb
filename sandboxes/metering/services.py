"""Metering: the tick that samples, charges and enforces, and the run bookkeeping around it.

`tick()` runs every METERING_INTERVAL seconds (Celery beat). In a fixed number of queries,
whatever the number of sandboxes, it:

1. opens a run for any live sandbox holding its resources that has none (a run is normally
   opened by `run_open` when the resources are allocated, at `starting`) and reads every
   unsettled run;
2. reads telemetry (Docker stats, NVML or the simulated GPUs) and stores samples in bulk;
3. charges every complete interval of every run, and the last partial one of an ended run,
   through the ledger in one batch (`credits.services.usage_charge_batch`), keyed by (run,
   interval start), so a retried tick, a worker killed mid-tick or a second beat never charges
   an interval twice;
4. starts the stop countdown for sandboxes whose account ran dry and cancels it when the account
   is funded again: it records when they stop (`SandboxRun.stop_at`), and the launcher stops
   them when that time comes (launcher.deadlines, on beat as often as the tick);
5. refreshes the per-minute and per-hour roll-ups, and broadcasts everything in one send.

Ticks take a PostgreSQL advisory lock (try-lock: a second, concurrent tick steps aside; the
next one catches up), so the bookkeeping counters move once per interval. The ledger's
idempotency keys are what guarantee the money, lock or no lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Avg, Count, Exists, F, Max, OuterRef, Q, Sum, Value
from django.db.models.functions import Greatest, TruncHour, TruncMinute
from django.utils import timezone

from portal.audit.services import audit_record
from portal.credits.models import CreditAccount
from portal.credits.services import UsageDue, usage_charge_batch
from sandboxes.gpus.backends import backend_from_setting
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.launcher.models import Sandbox
from sandboxes.live import broadcast

from . import telemetry
from .charging import charge_key, charge_metadata, intervals_due, owed, slot_start
from .messages import (
    account_groups,
    balance_message,
    cluster_message,
    iso,
    reading_fields,
    usage_sample_message,
    warning_message,
)
from .models import (
    DeviceRollup,
    DeviceSample,
    SandboxRun,
    Step,
    UsageCharge,
    UsageRollup,
    UsageSample,
)

logger = logging.getLogger(__name__)
TICK_LOCK = 0x6E61_6301  # "nac\x01": the advisory lock key of metering ticks
IDLE_UTIL_PCT = 5.0
_local_lock = threading.Lock()  # SQLite has no advisory locks: one tick per process at a time


# --- Runs -------------------------------------------------------------------------------------


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
    from . import tasks

    transaction.on_commit(lambda: tasks.run_settle.delay(run.pk))
    return run


def _runs_open_missing(now: dt.datetime) -> None:
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


# --- The tick -------------------------------------------------------------------------------


@dataclass
class TickResult:
    skipped: bool = False
    runs: int = 0
    samples: int = 0
    intervals: int = 0
    charged: int = 0
    unpaid: int = 0
    countdowns: list[str] = field(default_factory=list)
    warnings: list = field(default_factory=list)
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
        _runs_open_missing(now)
    runs = SandboxRun.objects.filter(settled=False).select_related(
        "sandbox__user", "sandbox__profile", "sandbox__image", "sandbox__organisation", "account"
    )
    if run_ids is not None:
        runs = runs.filter(pk__in=run_ids)
    runs = list(runs.order_by("pk"))
    result = TickResult(runs=len(runs))
    messages: list[tuple[str, dict]] = []
    shortfall = _charge(runs, now, result)
    messages += _enforce(runs, shortfall, now, result)
    if sample:
        held = _held_devices([r.sandbox_id for r in runs if r.ended_at is None])
        messages += _sample(runs, held, now, result)
        _rollups_refresh(now)
    result.messages = broadcast.send_after_commit(messages)
    return result


def _held_devices(sandbox_ids: list[int]) -> dict[int, list[GpuDevice]]:
    held: dict[int, list[GpuDevice]] = defaultdict(list)
    if sandbox_ids:
        for allocation in GpuAllocation.objects.filter(
            sandbox_id__in=sandbox_ids, released_at__isnull=True
        ).select_related("device"):
            held[allocation.sandbox_id].append(allocation.device)
    return held


# --- Sampling -------------------------------------------------------------------------------


def _sample(runs, held, now, result) -> list[tuple[str, dict]]:
    interval = settings.METERING_INTERVAL
    taken_at = slot_start(now, interval)
    open_runs = [r for r in runs if r.ended_at is None]
    containers = telemetry.containers_read({str(r.sandbox.public_id) for r in open_runs})
    devices = list(GpuDevice.objects.filter(mig_enabled=False).order_by("index", "mig_profile"))
    holder_of = {d.pk: r for r in open_runs for d in held.get(r.sandbox_id, [])}
    loads = {}
    for device in devices:
        run = holder_of.get(device.pk)
        load = None
        if run is not None:
            reading = containers.get(str(run.sandbox.public_id))
            cpu = reading.cpu_pct if reading is not None else None
            # One busy core keeps a (pretend) GPU busy: a notebook drives its GPU from one.
            load = 0.0 if cpu is None else cpu / 100
        loads[device.uuid] = (device.memory_mib, load)
    backend = backend_from_setting()
    gpus = telemetry.gpus_read(backend, loads, tick=int(taken_at.timestamp()) // interval)

    usage_rows, device_rows, messages = [], [], []
    for device in devices:
        reading = gpus.get(device.uuid)
        run = holder_of.get(device.pk)
        if reading is None and run is None:
            continue
        device_rows.append(
            DeviceSample(
                device=device,
                sandbox_id=run.sandbox_id if run else None,
                taken_at=taken_at,
                util_pct=reading.util_pct if reading else None,
                memory_used_mib=reading.memory_used_mib if reading else None,
                power_w=reading.power_w if reading else None,
                temperature_c=reading.temperature_c if reading else None,
            )
        )
    for run in open_runs:
        sandbox = run.sandbox
        container = containers.get(str(sandbox.public_id))
        its = [(d, gpus.get(d.uuid)) for d in held.get(sandbox.pk, [])]
        row = UsageSample(
            sandbox=sandbox,
            taken_at=taken_at,
            gpu_count=len(its),
            gpu_util_pct=_mean(r.util_pct for _d, r in its if r),
            gpu_memory_used_mib=_total(r.memory_used_mib for _d, r in its if r),
            gpu_power_w=_total(r.power_w for _d, r in its if r),
            gpu_temperature_c=_peak(r.temperature_c for _d, r in its if r),
            cpu_pct=container.cpu_pct if container else None,
            memory_used_mib=container.memory_used_mib if container else None,
        )
        usage_rows.append(row)
        message = usage_sample_message(
            run=run, row=row, gpus=its, container=container, simulated=backend.simulated, at=now
        )
        messages += [(group, message) for group in broadcast.sandbox_groups(sandbox)]
    UsageSample.objects.bulk_create(usage_rows, ignore_conflicts=True)
    DeviceSample.objects.bulk_create(device_rows, ignore_conflicts=True)
    result.samples = len(usage_rows)
    cluster = []
    for device in devices:
        run = holder_of.get(device.pk)
        holder = run.sandbox if run is not None else None
        cluster.append((device, holder, reading_fields(gpus.get(device.uuid))))
    messages.append((broadcast.CLUSTER_GROUP, cluster_message(gpus=cluster, at=now)))
    return messages


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 1) if values else None


def _total(values):
    values = [v for v in values if v is not None]
    return round(sum(values), 1) if values else None


def _peak(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


# --- Charging -------------------------------------------------------------------------------


def _charge(runs: list[SandboxRun], now: dt.datetime, result: TickResult) -> dict[int, int]:
    """Charge what is due; returns the unpaid credit-seconds of this tick by account."""
    new_rows, advanced = [], {}
    for run in runs:
        until = run.charged_until
        for interval in intervals_due(
            rate_millicredits=run.rate_millicredits,
            interval_seconds=run.interval_seconds,
            started_at=run.started_at,
            charged_until=run.charged_until,
            ended_at=run.ended_at,
            now=now,
        ):
            until = interval.ends
            if interval.due > 0:
                new_rows.append(
                    UsageCharge(
                        run=run,
                        interval_start=interval.start,
                        milliseconds=interval.milliseconds,
                        due=interval.due,
                        idempotency_key=charge_key(run.public_id, interval.start),
                    )
                )
        if until > run.charged_until or (run.ended_at is not None and until >= run.ended_at):
            advanced[run.pk] = until
    UsageCharge.objects.bulk_create(new_rows, ignore_conflicts=True)
    result.intervals = len(new_rows)

    # Everything not yet posted: this tick's rows, and any a killed tick left behind.
    pending = UsageCharge.objects.filter(charged__isnull=True).select_related(
        "run__sandbox__profile", "run__sandbox__image"
    )
    if runs and len(runs) < 50:
        pending = pending.filter(run__in=runs) if advanced or new_rows else pending.none()
    pending = list(pending.order_by("pk"))
    charged, warnings = usage_charge_batch(
        [
            UsageDue(
                account_id=c.run.account_id,
                credit_seconds=c.due,
                idempotency_key=c.idempotency_key,
                metadata=charge_metadata(c),
            )
            for c in pending
        ]
    )
    by_run: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    shortfall: dict[int, int] = defaultdict(int)
    for row, outcome in zip(pending, charged, strict=True):
        row.charged = outcome.charged
        row.transaction_id = outcome.transaction_id
        by_run[row.run_id][0] += outcome.charged
        by_run[row.run_id][1] += row.due - outcome.charged
        if row.due > outcome.charged:
            shortfall[row.run.account_id] += row.due - outcome.charged
    result.charged = sum(v[0] for v in by_run.values())
    result.unpaid = sum(v[1] for v in by_run.values())

    updates = []
    for run in runs:
        paid, unpaid = by_run.pop(run.pk, (0, 0))
        until = advanced.get(run.pk)
        if until is not None or paid or unpaid:
            settled = run.ended_at is not None and until is not None and until >= run.ended_at
            updates.append((run.pk, until, settled, paid, unpaid))
    # Rows a killed tick left for runs outside this tick's list.
    updates += [(run_id, None, False, paid, unpaid) for run_id, (paid, unpaid) in by_run.items()]
    with transaction.atomic():
        _charges_record(pending)
        _runs_advance(updates)
    stored = {
        pk: rest
        for pk, *rest in SandboxRun.objects.filter(pk__in=[r.pk for r in runs]).values_list(
            "pk", "charged_until", "settled", "charged_credit_seconds", "unpaid_credit_seconds"
        )
    }
    for run in runs:
        (
            run.charged_until,
            run.settled,
            run.charged_credit_seconds,
            run.unpaid_credit_seconds,
        ) = stored[run.pk]
    result.warnings = warnings
    return shortfall


def _charges_record(rows: list[UsageCharge]) -> None:
    """What the ledger took for each interval: one statement on PostgreSQL (a bulk_update's CASE
    of a thousand branches cost seconds there)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        UsageCharge.objects.bulk_update(rows, ["charged", "transaction"], batch_size=500)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE metering_usagecharge AS c SET charged = v.charged, transaction_id = v.txn "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, charged, txn) "
            "WHERE c.id = v.id",
            [[r.pk for r in rows], [r.charged for r in rows], [r.transaction_id for r in rows]],
        )


def _runs_advance(updates: list[tuple]) -> None:
    """Move each run's cursor forward (never back: a slower, concurrent settle cannot undo a
    tick) and add what was paid and left unpaid. `updates`: (run id, charged until or None,
    settled, paid, unpaid)."""
    if not updates:
        return
    if connection.vendor != "postgresql":
        for run_id, until, settled, paid, unpaid in updates:
            changes = {
                "charged_credit_seconds": F("charged_credit_seconds") + paid,
                "unpaid_credit_seconds": F("unpaid_credit_seconds") + unpaid,
            }
            if until is not None:
                changes["charged_until"] = Greatest(F("charged_until"), Value(until))
            if settled:
                changes["settled"] = True
            SandboxRun.objects.filter(pk=run_id).update(**changes)
        return
    columns = list(zip(*updates, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE metering_sandboxrun AS r SET "
            "charged_until = greatest(r.charged_until, coalesce(v.until, r.charged_until)), "
            "settled = r.settled OR v.settled, "
            "charged_credit_seconds = r.charged_credit_seconds + v.paid, "
            "unpaid_credit_seconds = r.unpaid_credit_seconds + v.unpaid "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::boolean[], %s::bigint[], "
            "%s::bigint[]) AS v(id, until, settled, paid, unpaid) WHERE r.id = v.id",
            [list(column) for column in columns],
        )


# --- Enforcement ----------------------------------------------------------------------------


def _enforce(runs, shortfall, now, result) -> list[tuple[str, dict]]:
    """Balances to the browser; the stop countdown for accounts that ran dry (and its end when
    they are funded again). The countdown is only recorded: the launcher stops the sandboxes
    when it is over."""
    open_runs = [r for r in runs if r.ended_at is None]
    by_account: dict[int, list[SandboxRun]] = defaultdict(list)
    for run in open_runs:
        by_account[run.account_id].append(run)
    accounts = CreditAccount.objects.in_bulk(list(by_account))
    grace = dt.timedelta(seconds=settings.METERING_GRACE_SECONDS)
    messages, countdown_changed = [], []
    for account_id, its in by_account.items():
        account = accounts[account_id]
        groups = account_groups(account, its)
        dry = shortfall.get(account_id, 0) > 0 or (account.balance or 0) <= 0
        if dry:
            for run in its:
                if run.exhausted_at is None:
                    run.exhausted_at, run.stop_at = now, now + grace
                    countdown_changed.append(run)
                    result.countdowns.append(str(run.sandbox.public_id))
            warning = warning_message(account=account, kind="exhausted", runs=its)
            messages += [(group, warning) for group in groups]
        elif any(run.exhausted_at is not None for run in its):
            for run in its:
                run.exhausted_at = run.stop_at = None
                countdown_changed.append(run)
            warning = warning_message(account=account, kind="restored", runs=its)
            messages += [(group, warning) for group in groups]
        burn = sum(run.rate_millicredits for run in its)
        balance = balance_message(account=account, burn_millicredits=burn, at=now)
        messages += [(group, balance) for group in groups]
    for warning in result.warnings:
        account = warning.grant.account
        its = by_account.get(account.pk, [])
        low = warning_message(
            account=account, kind="threshold", runs=its, threshold=warning.threshold_percent
        )
        messages += [(group, low) for group in account_groups(account, its)]
    if countdown_changed:
        SandboxRun.objects.bulk_update(countdown_changed, ["exhausted_at", "stop_at"])
        for run in countdown_changed:
            if run.exhausted_at is not None:
                audit_record(
                    actor=None,
                    action="sandbox.credits_exhausted",
                    target=run.sandbox,
                    data={"stop_at": iso(run.stop_at), "account": str(run.account.public_id)},
                )
    return messages


# --- Roll-ups, retention --------------------------------------------------------------------

_ROLLED = ["gpu_util_pct", "gpu_memory_used_mib", "gpu_power_w", "cpu_pct"]
_PEAKS = ["gpu_temperature_c", "memory_used_mib"]


def _rollups_refresh(now: dt.datetime) -> None:
    """Recompute the minute buckets the last minute touched, then the hour buckets from those
    minutes (weighted by their sample counts). Upserts: running it twice changes nothing."""
    since_minute = (now - dt.timedelta(seconds=60)).replace(second=0, microsecond=0)
    minutes = (
        UsageSample.objects.filter(taken_at__gte=since_minute)
        .annotate(bucket=TruncMinute("taken_at", tzinfo=dt.UTC))
        .values("sandbox_id", "bucket")
        .annotate(
            samples=Count("id"),
            **{name: Avg(name) for name in _ROLLED},
            **{name: Max(name) for name in _PEAKS},
        )
    )
    _upsert(Step.MINUTE, minutes)
    since_hour = (now - dt.timedelta(seconds=120)).replace(minute=0, second=0, microsecond=0)
    weighted = {
        name: Sum(F(name) * F("samples")) / Sum("samples", filter=Q(**{f"{name}__isnull": False}))
        for name in _ROLLED
    }
    hours = (
        UsageRollup.objects.filter(step=Step.MINUTE, bucket__gte=since_hour)
        .annotate(hour=TruncHour("bucket", tzinfo=dt.UTC))
        .values("sandbox_id", "hour")
        .annotate(total=Sum("samples"), **weighted, **{name: Max(name) for name in _PEAKS})
    )
    _upsert(Step.HOUR, ({**row, "bucket": row["hour"], "samples": row["total"]} for row in hours))
    devices = (
        DeviceSample.objects.filter(taken_at__gte=since_hour)
        .annotate(bucket=TruncHour("taken_at", tzinfo=dt.UTC))
        .values("device_id", "bucket")
        .annotate(
            samples=Count("id"),
            util=Avg("util_pct"),
            held=Count("id", filter=Q(sandbox_id__isnull=False)),
            idle_held=Count("id", filter=Q(sandbox_id__isnull=False, util_pct__lt=IDLE_UTIL_PCT)),
        )
    )
    DeviceRollup.objects.bulk_create(
        [
            DeviceRollup(
                device_id=row["device_id"],
                bucket=row["bucket"],
                samples=row["samples"],
                util_pct=row["util"],
                held_samples=row["held"],
                idle_held_samples=row["idle_held"],
            )
            for row in devices
        ],
        update_conflicts=True,
        unique_fields=["device", "bucket"],
        update_fields=["samples", "util_pct", "held_samples", "idle_held_samples"],
    )


def _upsert(step: str, rows) -> None:
    UsageRollup.objects.bulk_create(
        [
            UsageRollup(
                sandbox_id=row["sandbox_id"],
                step=step,
                bucket=row["bucket"],
                samples=row["samples"],
                **{name: row[name] for name in _ROLLED + _PEAKS},
            )
            for row in rows
        ],
        update_conflicts=True,
        unique_fields=["sandbox", "step", "bucket"],
        update_fields=["samples", *_ROLLED, *_PEAKS],
    )


def samples_prune(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Raw samples older than the retention go (charts read roll-ups); minute roll-ups after
    their own, longer retention; hour roll-ups stay."""
    now = now or timezone.now()
    raw_before = now - dt.timedelta(hours=settings.METERING_RAW_RETENTION_HOURS)
    minute_before = now - dt.timedelta(days=settings.METERING_MINUTE_ROLLUP_RETENTION_DAYS)
    return {
        "usage_samples": UsageSample.objects.filter(taken_at__lt=raw_before).delete()[0],
        "device_samples": DeviceSample.objects.filter(taken_at__lt=raw_before).delete()[0],
        "minute_rollups": UsageRollup.objects.filter(
            step=Step.MINUTE, bucket__lt=minute_before
        ).delete()[0],
    }


# --- Reconciliation -------------------------------------------------------------------------


@dataclass
class Drift:
    run: str
    sandbox: str
    expected: int  # rate × allocated time, from the run's start to where it is charged
    due: int  # what its intervals say was due
    charged: int  # what its interval rows say the ledger took
    ledger: int  # what the ledger's usage transactions for the run hold
    counter: int  # the run's running total


def reconcile(*, since: dt.datetime | None = None) -> dict:
    """Recompute every run's charges from its start and end (or charged-until) and compare them
    with its interval rows and with the ledger. Every figure must agree to the credit-second;
    any drift is logged as an error and audited, never corrected silently."""
    from django.db.models.fields.json import KeyTextTransform

    from portal.credits.models import LedgerEntry, LedgerTransaction

    since = since or timezone.now() - dt.timedelta(days=2)
    runs = list(
        SandboxRun.objects.filter(Q(settled=False) | Q(ended_at__gte=since)).select_related(
            "sandbox"
        )
    )
    ids = [r.pk for r in runs]
    rows = {
        row["run_id"]: row
        for row in UsageCharge.objects.filter(run_id__in=ids)
        .values("run_id")
        .annotate(due=Sum("due"), charged=Sum("charged"))
    }
    ledger = dict(
        LedgerEntry.objects.filter(
            transaction__kind=LedgerTransaction.Kind.USAGE,
            amount__lt=0,
            transaction__metadata__run__in=[str(r.public_id) for r in runs],
        )
        .annotate(run=KeyTextTransform("run", "transaction__metadata"))
        .values("run")
        .annotate(total=Sum("amount"))
        .values_list("run", "total")
    )
    drifts, unpaid = [], 0
    for run in runs:
        row = rows.get(run.pk, {"due": 0, "charged": 0})
        drift = Drift(
            run=str(run.public_id),
            sandbox=str(run.sandbox.public_id),
            expected=owed(
                rate_millicredits=run.rate_millicredits,
                started_at=run.started_at,
                until=run.charged_until,
            ),
            due=row["due"] or 0,
            charged=row["charged"] or 0,
            ledger=-(ledger.get(str(run.public_id)) or 0),
            counter=run.charged_credit_seconds,
        )
        unpaid += drift.due - drift.charged
        if drift.expected != drift.due or not drift.charged == drift.ledger == drift.counter:
            drifts.append(drift)
    for drift in drifts:
        logger.error("metering drift: %s", drift)
        audit_record(actor=None, action="metering.drift", data=drift.__dict__)
    return {"runs": len(runs), "drift": [d.__dict__ for d in drifts], "unpaid": unpaid}
