"""Enforcement: an account that ran dry starts its open runs' stop countdown (`stop_at`, after
METERING_GRACE_SECONDS), which is lifted when it is funded again; the balances, warnings and
countdowns go to the browser. Metering only records the countdown: the launcher stops the
sandboxes whose countdown is over (launcher.deadlines), so metering never calls up into it."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.credits.models import CreditAccount

from ..messages import account_groups, balance_message, iso, warning_message
from ..models import SandboxRun


@dataclass
class Enforced:
    countdowns: list[str]  # public ids of the sandboxes whose countdown started this tick
    messages: list[tuple[str, dict]]


def enforce(
    runs: list[SandboxRun], *, shortfall: dict[int, int], warnings: list, now: dt.datetime
) -> Enforced:
    """Balances to the browser; the stop countdown for the open runs of accounts that ran dry
    (`shortfall`: what each could not pay this tick), and its end when they are funded again;
    the ledger's low-balance `warnings`. The countdown is only recorded: the launcher stops the
    sandboxes when it is over (launcher.deadlines)."""
    open_runs = [r for r in runs if r.ended_at is None]
    by_account: dict[int, list[SandboxRun]] = defaultdict(list)
    for run in open_runs:
        by_account[run.account_id].append(run)
    accounts = CreditAccount.objects.in_bulk(list(by_account))
    grace = dt.timedelta(seconds=settings.METERING_GRACE_SECONDS)
    messages, countdown_changed, countdowns = [], [], []
    for account_id, its in by_account.items():
        account = accounts[account_id]
        groups = account_groups(account, its)
        dry = shortfall.get(account_id, 0) > 0 or (account.balance or 0) <= 0
        if dry:
            for run in its:
                if run.exhausted_at is None:
                    run.exhausted_at, run.stop_at = now, now + grace
                    countdown_changed.append(run)
                    countdowns.append(str(run.sandbox.public_id))
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
    for warning in warnings:
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
                    action=AuditAction.SANDBOX_CREDITS_EXHAUSTED,
                    target=run.sandbox,
                    data={
                        "stop_at": iso(run.stop_at),
                        "account": str(accounts[run.account_id].public_id),
                    },
                )
    return Enforced(countdowns=countdowns, messages=messages)
