"""Usage: used GPU time charged to the account that pays for it, interval by interval.

`usage_charge_batch` is the ledger's second door (metering charges a whole tick through it);
`usage_charge`, one charge paid in full or refused, is its one-item case.
"""

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import posting as backend
from ..charge_metadata import ChargeMetadata
from ..models import CreditAccount, CreditGrant, LedgerTransaction
from .ledger import (
    MAX_AMOUNT,
    InsufficientCredits,
    LedgerError,
    Posting,
    _check_replay,
    _refusal_error,
    ledger_post,
    system_account,
)
from .warnings import _below_a_threshold, _warnings_record


def usage_charge(
    *,
    account: CreditAccount,
    credit_seconds: int,
    idempotency_key: str,
    metadata: ChargeMetadata | dict,
) -> LedgerTransaction:
    """Charge used GPU time to a holder, from the lots that expire first, and warn on the way
    down. `metadata` names the sandbox and profile, for statements (a dict is read as the
    ChargeMetadata of those fields).

    The one-item case of `usage_charge_batch`, through the same code, except that it is paid in
    full or not at all: a shortfall raises InsufficientCredits and writes nothing, and a key
    used before for a different posting raises IdempotencyConflict. Returns the transaction;
    its `replayed` and `drawn` are as `ledger_post` sets them.
    """
    if account is None or account.pk is None:
        raise LedgerError(_("Every entry needs an existing account."))
    if not isinstance(metadata, ChargeMetadata):
        metadata = ChargeMetadata(**metadata)
    [charged], _warnings = usage_charge_batch(
        [UsageDue(account.pk, credit_seconds, idempotency_key, metadata)], partial=False
    )
    if charged.replayed:
        txn = LedgerTransaction.objects.get(pk=charged.transaction_id)
        usage = system_account(CreditAccount.System.USAGE)
        postings = [Posting(account, -credit_seconds), Posting(usage, credit_seconds)]
        _check_replay(txn, LedgerTransaction.Kind.USAGE, postings)
    else:  # the row as it was inserted, without reading it back
        txn = LedgerTransaction(
            public_id=charged.public_id,
            idempotency_key=idempotency_key,
            kind=LedgerTransaction.Kind.USAGE,
            description=_("GPU usage"),
            metadata=metadata.to_json(),
            created_at=charged.posted_at,
        )
        backend.mark_saved(txn, charged.transaction_id)
    txn.replayed, txn.drawn = charged.replayed, charged.drawn
    return txn


@dataclass(frozen=True)
class UsageDue:
    """One interval of one sandbox, to be charged to the account that pays for it."""

    account_id: int
    credit_seconds: int
    idempotency_key: str
    metadata: ChargeMetadata


@dataclass(frozen=True)
class UsageCharged:
    idempotency_key: str
    charged: int  # what the ledger took; less than due when the account ran dry
    transaction_id: int | None
    replayed: bool = False  # posted before, by an earlier try: `transaction_id` is that one's
    drawn: list = field(default_factory=list)  # the lots it drew, as they stand afterwards
    # The transaction's public id and time, when this call posted it (not on a replay).
    public_id: uuid.UUID | None = None
    posted_at: dt.datetime | None = None


def usage_charge_batch(
    dues: Sequence[UsageDue], *, partial: bool = True, description: str | None = None
) -> tuple[list[UsageCharged], list]:
    """Charge many intervals at once (a metering tick): each is its own usage transaction, keyed
    by its idempotency key, so a retried or doubled tick charges nothing twice.

    A shortfall is not an error: time already used is charged as far as the account's open lots
    go, the unpaid rest is recorded in the transaction's metadata, and an empty account is
    charged nothing (the caller stops the sandbox). With `partial=False` a shortfall raises
    InsufficientCredits and nothing is written (what `usage_charge` wants). On PostgreSQL
    outside a transaction this is one statement whatever the number of intervals; elsewhere it
    posts one by one through `ledger_post`. Returns the results in the order given, and the
    warnings the charges crossed. `description` names the transactions (GPU usage unless told:
    model usage says so).

    The warning check runs after the charges, from what they returned: no query while an
    account is locked. A warning missed because a worker died in between is caught by the next
    charge on the lot (the lot is still below the threshold, and warnings are kept once each).
    """
    for due in dues:
        amount = due.credit_seconds
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
            raise LedgerError(_("Every entry needs a non-zero amount within range."))
        if not isinstance(due.idempotency_key, str) or not 0 < len(due.idempotency_key) <= 200:
            raise LedgerError(_("An idempotency key of 1 to 200 characters is required."))
    if not dues:
        return [], []
    usage = system_account(CreditAccount.System.USAGE)
    description = (description or _("GPU usage"))[:500]
    order = sorted(range(len(dues)), key=lambda i: (dues[i].account_id, i))
    if not backend.one_statement_possible():
        if partial:
            return _usage_charge_one_by_one(dues, order, usage, partial, description)
        with transaction.atomic():  # a refusal takes back the items posted before it
            return _usage_charge_one_by_one(dues, order, usage, partial, description)
    at = timezone.now()
    public_ids = [uuid.uuid4() for _i in order]
    items = [
        (
            public_id,
            dues[i].idempotency_key,
            dues[i].metadata.to_json(),
            dues[i].account_id,
            dues[i].credit_seconds,
        )
        for i, public_id in zip(order, public_ids, strict=True)
    ]
    try:
        posted = backend.post_usage_batch(
            usage_account_id=usage.pk,
            description=description,
            at=at,
            items=items,
            partial=partial,
        )
    except backend.PostingRefused as refusal:
        raise _refusal_error(refusal) from refusal
    results: list[UsageCharged | None] = [None] * len(dues)
    low = []
    for i, item, public_id in zip(order, posted, public_ids, strict=True):
        new = not item.replayed
        results[i] = UsageCharged(
            dues[i].idempotency_key,
            item.charged,
            item.transaction_id,
            item.replayed,
            item.drawn,
            public_id=public_id if new else None,
            posted_at=at if new else None,
        )
        low.extend(lot.grant_id for lot in item.drawn if _below_a_threshold(lot))
    return results, _warnings_record(low)


def _usage_charge_one_by_one(
    dues, order, usage, partial, description
) -> tuple[list[UsageCharged], list]:
    posted = {
        txn.idempotency_key: txn
        for txn in LedgerTransaction.objects.filter(
            idempotency_key__in=[due.idempotency_key for due in dues]
        )
    }
    results: list[UsageCharged | None] = [None] * len(dues)
    low = []
    for i in order:
        due = dues[i]
        existing = posted.get(due.idempotency_key)
        if existing is not None:
            charged = -sum(
                e.amount for e in existing.entries.all() if e.account_id == due.account_id
            )
            results[i] = UsageCharged(due.idempotency_key, charged, existing.pk, replayed=True)
            continue
        account = CreditAccount.objects.filter(pk=due.account_id).first()
        if account is None or account.is_system:  # as credits_post_debit refuses them
            raise _refusal_error(backend.PostingRefused(backend.UNKNOWN_ACCOUNT))
        take, metadata = due.credit_seconds, due.metadata
        for _attempt in range(3):
            try:
                txn = ledger_post(
                    idempotency_key=due.idempotency_key,
                    kind=LedgerTransaction.Kind.USAGE,
                    postings=[Posting(account, -take), Posting(usage, take)],
                    description=description,
                    metadata=metadata.to_json(),
                )
            except InsufficientCredits:
                if not partial:
                    raise
                take = min(_open_lots_hold(account), due.credit_seconds - 1)
                metadata = replace(due.metadata, unpaid=due.credit_seconds - take)
                if take <= 0:
                    break
                continue
            new = not txn.replayed
            results[i] = UsageCharged(
                due.idempotency_key,
                take,
                txn.pk,
                txn.replayed,
                txn.drawn,
                public_id=txn.public_id if new else None,
                posted_at=txn.created_at if new else None,
            )
            low.extend(lot.grant_id for lot in txn.drawn if _below_a_threshold(lot))
            break
        if results[i] is None:
            results[i] = UsageCharged(due.idempotency_key, 0, None)
    return results, _warnings_record(low)


def _open_lots_hold(account: CreditAccount) -> int:
    return (
        CreditGrant.objects.filter(
            account=account, remaining__gt=0, expires_at__gt=timezone.now()
        ).aggregate(total=models.Sum("remaining"))["total"]
        or 0
    )
