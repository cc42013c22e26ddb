"""Shared helpers for the credits tests: lots, snapshots of the books, and the books' invariants."""

import datetime as dt
import uuid
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.credits.models import (
    CreditAccount,
    CreditGrant,
    CreditWarning,
    LedgerEntry,
    LedgerTransaction,
)
from portal.credits.services import (
    account_for_organisation,
    grant_issue,
    system_account,
    usage_charge,
)
from tests.factories import OrganisationFactory

RATE = Decimal("750.00")


def org_account(organisation=None) -> CreditAccount:
    return account_for_organisation(organisation or OrganisationFactory())


def lot(
    account: CreditAccount, seconds: int, *, days: float = 30, key: str | None = None
) -> CreditGrant:
    """A lot of `seconds` on the account, expiring in `days`."""
    return grant_issue(
        account=account,
        credit_seconds=seconds,
        rate_pkr_per_gpu_hour=RATE,
        expires_at=timezone.now() + dt.timedelta(days=days),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=key or f"test-lot:{uuid.uuid4()}",
    )


def lapse(grant: CreditGrant, *, seconds_ago: int = 1) -> None:
    """Move a lot's expiry into the past (the grants table is not append-only)."""
    CreditGrant.objects.filter(pk=grant.pk).update(
        expires_at=timezone.now() - dt.timedelta(seconds=seconds_ago)
    )


def books() -> dict:
    """Everything a refused posting must leave as it was."""
    return {
        "transactions": list(
            LedgerTransaction.objects.order_by("pk").values_list("pk", "idempotency_key", "kind")
        ),
        "entries": list(
            LedgerEntry.objects.order_by("pk").values_list(
                "pk", "transaction_id", "account_id", "grant_id", "amount"
            )
        ),
        "accounts": sorted(CreditAccount.objects.values_list("pk", "balance")),
        "lots": sorted(
            CreditGrant.objects.values_list("pk", "remaining", "expired_at", "revoked_at")
        ),
        "warnings": sorted(CreditWarning.objects.values_list("grant_id", "threshold_percent")),
        "audit": AuditEvent.objects.count(),
    }


def balance_of(account: CreditAccount) -> int:
    return CreditAccount.objects.values_list("balance", flat=True).get(pk=account.pk)


def remaining_of(grant: CreditGrant) -> int:
    return CreditGrant.objects.values_list("remaining", flat=True).get(pk=grant.pk)


def entries_sum(**filters) -> int:
    return LedgerEntry.objects.filter(**filters).aggregate(s=Sum("amount"))["s"] or 0


def assert_books_consistent(accounts=None) -> None:
    """Every transaction sums to zero; each holder's cached balance equals the sum of its entries
    and the sum of its lots' remaining; nothing is negative."""
    unbalanced = list(
        LedgerEntry.objects.values("transaction_id")
        .annotate(total=Sum("amount"))
        .exclude(total=0)
        .values_list("transaction_id", "total")
    )
    assert unbalanced == []
    if accounts is None:
        accounts = CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM)
    for account in accounts:
        account.refresh_from_db()
        assert account.balance is not None
        assert account.balance >= 0
        assert account.balance == entries_sum(account=account)
        lots = CreditGrant.objects.filter(account=account)
        assert account.balance == (lots.aggregate(s=Sum("remaining"))["s"] or 0)
        assert not lots.filter(remaining__lt=0).exists()
        for grant in lots:
            assert grant.remaining == entries_sum(grant=grant)


def charge(account, seconds, key):
    return usage_charge(
        account=account, credit_seconds=seconds, idempotency_key=key, metadata={"sandbox": "t"}
    )


def drawn(txn) -> list[tuple[int, int]]:
    """(grant pk, amount) of the holder legs of a transaction, in entry order."""
    return list(
        txn.entries.filter(grant__isnull=False).order_by("pk").values_list("grant_id", "amount")
    )


def usage():
    return system_account(CreditAccount.System.USAGE)


def adjustments():
    return system_account(CreditAccount.System.ADJUSTMENTS)
