"""Billing: every complete interval of every run, and the last partial one of an ended run, is
charged through the ledger in one batch (`credits.services.usage_charge_batch`), keyed by (run,
interval start), so a retried tick, a worker killed mid-tick or a second beat never charges an
interval twice. What an empty account could not pay is recorded as unpaid, never hidden."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest

from portal.credits.services import UsageDue, usage_charge_batch

from ..charging import charge_key, charge_metadata, intervals_due
from ..models import SandboxRun, UsageCharge


@dataclass
class Charged:
    intervals: int  # interval rows written
    charged: int  # credit-seconds the ledger took
    unpaid: int  # credit-seconds due that it could not take
    shortfall: dict[int, int]  # unpaid credit-seconds by account id
    warnings: list  # the ledger's low-balance warnings (credits.services.CreditWarning)


def charge(runs: list[SandboxRun], *, now: dt.datetime) -> Charged:
    """Charge every interval of `runs` that is due by `now` through the ledger, in one batch,
    and move the runs' cursors and counters (the runs given are refreshed from the database)."""
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
                        run_id=run.pk,
                        interval_start=interval.start,
                        milliseconds=interval.milliseconds,
                        due=interval.due,
                        idempotency_key=charge_key(run.public_id, interval.start),
                    )
                )
        if until > run.charged_until or (run.ended_at is not None and until >= run.ended_at):
            advanced[run.pk] = until
    UsageCharge.objects.bulk_create(new_rows, ignore_conflicts=True)

    # Everything not yet posted: this tick's rows, and any a killed tick left behind.
    pending = UsageCharge.objects.filter(charged__isnull=True)
    if runs and len(runs) < 50:
        pending = pending.filter(run__in=runs) if advanced or new_rows else pending.none()
    pending = list(pending.order_by("pk"))
    run_of = _runs_of(pending, runs)
    charged, warnings = usage_charge_batch(
        [
            UsageDue(
                account_id=run_of[c.run_id].account_id,
                credit_seconds=c.due,
                idempotency_key=c.idempotency_key,
                metadata=charge_metadata(c, run_of[c.run_id]),
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
            shortfall[run_of[row.run_id].account_id] += row.due - outcome.charged
    paid_total = sum(v[0] for v in by_run.values())
    unpaid_total = sum(v[1] for v in by_run.values())

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
        stored = _runs_advance(updates)
    for run in runs:
        if run.pk in stored:
            (
                run.charged_until,
                run.settled,
                run.charged_credit_seconds,
                run.unpaid_credit_seconds,
            ) = stored[run.pk]
    return Charged(
        intervals=len(new_rows),
        charged=paid_total,
        unpaid=unpaid_total,
        shortfall=dict(shortfall),
        warnings=warnings,
    )


def _runs_of(rows: list[UsageCharge], runs: list[SandboxRun]) -> dict[int, SandboxRun]:
    """The run of each row, with the sandbox, profile and image the ledger's metadata names: the
    tick's own runs, already read with them (a thousand rows read again with three joins cost
    more than their posting); a run outside the tick's list (a row a killed tick left behind)
    is read here."""
    loaded = {run.pk: run for run in runs}
    missing = {row.run_id for row in rows} - loaded.keys()
    if missing:
        loaded.update(
            SandboxRun.objects.select_related("sandbox__profile", "sandbox__image").in_bulk(missing)
        )
    return loaded


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


# A run's cursor and counters, as _runs_advance returns them (its RETURNING lists the same).
_STORED = ("charged_until", "settled", "charged_credit_seconds", "unpaid_credit_seconds")


def _runs_advance(updates: list[tuple]) -> dict[int, tuple]:
    """Move each run's cursor forward (never back: a slower, concurrent settle cannot undo a
    tick) and add what was paid and left unpaid. `updates`: (run id, charged until or None,
    settled, paid, unpaid). Returns each updated run's cursor and counters as stored now."""
    if not updates:
        return {}
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
        updated = SandboxRun.objects.filter(pk__in=[u[0] for u in updates])
        return {pk: tuple(rest) for pk, *rest in updated.values_list("pk", *_STORED)}
    columns = list(zip(*updates, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE metering_sandboxrun AS r SET "
            "charged_until = greatest(r.charged_until, coalesce(v.until, r.charged_until)), "
            "settled = r.settled OR v.settled, "
            "charged_credit_seconds = r.charged_credit_seconds + v.paid, "
            "unpaid_credit_seconds = r.unpaid_credit_seconds + v.unpaid "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::boolean[], %s::bigint[], "
            "%s::bigint[]) AS v(id, until, settled, paid, unpaid) WHERE r.id = v.id "
            "RETURNING r.id, r.charged_until, r.settled, r.charged_credit_seconds, "
            "r.unpaid_credit_seconds",
            [list(column) for column in columns],
        )
        return {pk: tuple(rest) for pk, *rest in cursor.fetchall()}
