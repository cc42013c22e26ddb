"""Reconciliation: every run's charges recomputed from its start and compared with its interval
rows, the ledger and its counter (metering.reconcile, on beat). Drift is reported, never fixed
silently."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db.models import Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.credits.models import LedgerEntry, LedgerTransaction

from ..charging import owed
from ..models import SandboxRun, UsageCharge

logger = logging.getLogger(__name__)


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
        audit_record(actor=None, action=AuditAction.METERING_DRIFT, data=drift.__dict__)
    return {"runs": len(runs), "drift": [d.__dict__ for d in drifts], "unpaid": unpaid}
