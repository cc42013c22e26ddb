"""The books' one writer, as the rest of the app sees it: accounts, and `ledger_post`.

Ledger rows are written only by the posting module (credits.posting), and only through two
doors: `ledger_post` here (any balanced transaction) and `usage.usage_charge_batch` (usage
charges, all of a metering tick's at once; `usage_charge` is its one-item case).

Locking, in one order everywhere: holder accounts by primary key (the UPDATE of the cached
balance takes the row lock), then everything else. Lots (grants) are read and changed only by a
transaction that holds their account's row lock, so they need no lock of their own.
"""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.organisations.models import Membership

from .. import posting as backend
from ..models import CreditAccount, CreditGrant, LedgerTransaction

MAX_AMOUNT = 2**62  # far above any real grant; keeps sums inside a signed 64-bit column


class LedgerError(ApplicationError):
    """A posting that can never be valid: unbalanced, zero, unknown account, malformed key."""


class InsufficientCredits(ApplicationError):
    """The account's open lots do not cover the debit. Nothing was written."""

    def __init__(self, message: str | None = None):
        super().__init__(
            message or _("Not enough GPU credits for this."), code="insufficient_credits"
        )


class IdempotencyConflict(ApplicationError):
    """The key was used before for a different posting."""


@dataclass(frozen=True)
class Posting:
    """One intended leg of a transaction. For holder accounts, `grant` names the lot: required
    for credits; for debits, None means "draw from the lots that expire first"."""

    account: CreditAccount
    amount: int
    grant: CreditGrant | None = None


# --- Accounts -----------------------------------------------------------------------------


def _account_get_or_create(**lookup) -> CreditAccount:
    try:
        with transaction.atomic():
            account, _created = CreditAccount.objects.get_or_create(**lookup)
    except IntegrityError:  # created concurrently by someone else: theirs is as good
        account = CreditAccount.objects.get(**{k: v for k, v in lookup.items() if k != "defaults"})
    return account


_system_accounts: dict[str, CreditAccount] = {}


def system_account(code: str) -> CreditAccount:
    """One of the programme's own accounts. They never change once made, so each process
    remembers them, but only once the row is known to be committed: a row made inside a
    transaction that later rolls back must not be remembered. (A flush of the database, in
    tests, also forgets them: see apps.py.)"""
    account = _system_accounts.get(code)
    if account is None:
        account = _account_get_or_create(
            system_code=code, defaults={"kind": CreditAccount.Kind.SYSTEM, "balance": None}
        )
        transaction.on_commit(lambda: _system_accounts.setdefault(code, account))
    return account


def system_accounts_forget(**kwargs) -> None:
    _system_accounts.clear()


def account_for_organisation(organisation) -> CreditAccount:
    return _account_get_or_create(
        organisation=organisation,
        defaults={"kind": CreditAccount.Kind.ORGANISATION, "balance": 0},
    )


def account_for_student(user) -> CreditAccount:
    return _account_get_or_create(
        user=user, defaults={"kind": CreditAccount.Kind.STUDENT, "balance": 0}
    )


def decision_conflict_refuse(
    *, acting_user, account: CreditAccount | None = None, organisation_id: int | None = None
) -> None:
    """Refuse a programme manager's decision about what is theirs: their own (student) account,
    or an organisation they belong to (named by its account, or by its id when there is no
    account to name, as in the review of an application). One rule for revocations, adjustments
    and reviews; a system action (no acting person) is never refused."""
    if acting_user is None:
        return
    if account is not None:
        if account.user_id is not None and account.user_id == acting_user.pk:
            raise PermissionDenied(
                _("This is your own account, so another programme manager must decide.")
            )
        organisation_id = account.organisation_id
    if (
        organisation_id is not None
        and Membership.objects.filter(organisation_id=organisation_id, user=acting_user).exists()
    ):
        raise PermissionDenied(
            _("You belong to this organisation, so another programme manager must decide.")
        )


# --- The one writer -------------------------------------------------------------------------


_KINDS = frozenset(LedgerTransaction.Kind.values)


def _validate(idempotency_key: str, kind: str, postings: Sequence[Posting]) -> None:
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 200:
        raise LedgerError(_("An idempotency key of 1 to 200 characters is required."))
    if kind not in _KINDS:
        raise LedgerError(_("Unknown kind of transaction: %(kind)s.") % {"kind": kind})
    if len(postings) < 2:
        raise LedgerError(_("A transaction needs at least two entries."))
    for posting in postings:
        amount = posting.amount
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise LedgerError(_("Amounts are whole credit-seconds."))
        if amount == 0 or abs(amount) > MAX_AMOUNT:
            raise LedgerError(_("Every entry needs a non-zero amount within range."))
        account = posting.account
        if account is None or account.pk is None:
            raise LedgerError(_("Every entry needs an existing account."))
        if account.is_system and posting.grant is not None:
            raise LedgerError(_("System accounts hold no grants."))
        if not account.is_system:
            if amount > 0 and posting.grant is None:
                raise LedgerError(_("Credits to a holder account go into a grant."))
            if posting.grant is not None and posting.grant.account_id != account.pk:
                raise LedgerError(_("That grant belongs to another account."))
    if sum(p.amount for p in postings) != 0:
        raise LedgerError(_("The entries of a transaction must sum to zero."))


def _check_replay(existing: LedgerTransaction, kind: str, postings: Sequence[Posting]) -> None:
    wanted: dict[int, int] = defaultdict(int)
    for posting in postings:
        wanted[posting.account.pk] += posting.amount
    recorded: dict[int, int] = defaultdict(int)
    for account_pk, amount in existing.entries.values_list("account_id", "amount"):
        recorded[account_pk] += amount
    if existing.kind != kind or dict(wanted) != dict(recorded):
        raise IdempotencyConflict(
            _("This idempotency key was already used for a different transaction.")
        )


def ledger_post(
    *,
    idempotency_key: str,
    kind: str,
    postings: Sequence[Posting],
    description: str = "",
    metadata: dict | None = None,
    acting_user=None,
) -> LedgerTransaction:
    """Record one balanced transaction, exactly once per idempotency key.

    Refuses, writing nothing: unbalanced or zero entries, unknown accounts, a debit the
    account's open lots cannot cover (no holder balance ever goes negative). Posting a key
    again returns the first transaction (or IdempotencyConflict if it differs); the returned
    object's `replayed` attribute says which happened, and `drawn` lists the lots it took
    credits from, as they stand afterwards.
    """
    _validate(idempotency_key, kind, postings)
    txn = LedgerTransaction(
        public_id=uuid.uuid4(),
        idempotency_key=idempotency_key,
        kind=kind,
        description=description[:500],
        metadata=metadata or {},
        created_by=acting_user if getattr(acting_user, "pk", None) else None,
    )
    try:
        if backend.one_statement_possible():
            drawn = backend.post_in_one_statement(txn, postings)
        else:
            with transaction.atomic():
                drawn = backend.insert_and_apply(txn, postings)
    except backend.PostingRefused as refusal:
        raise _refusal_error(refusal) from refusal
    if drawn is None:
        existing = LedgerTransaction.objects.get(idempotency_key=idempotency_key)
        _check_replay(existing, kind, postings)
        existing.replayed, existing.drawn = True, []
        return existing
    txn.drawn = drawn
    txn.replayed = False
    return txn


def _refusal_error(refusal: backend.PostingRefused) -> ApplicationError:
    if refusal.reason == backend.INSUFFICIENT:
        return InsufficientCredits()
    return LedgerError(backend.REFUSALS[refusal.reason]())
