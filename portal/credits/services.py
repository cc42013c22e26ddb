"""Writes to the books. Ledger rows are written only by the posting module (credits.posting),
and only through two doors here: `ledger_post` (any balanced transaction) and
`usage_charge_batch` (usage charges, all of a metering tick's at once; `usage_charge` is its
one-item case).

Locking, in one order everywhere: holder accounts by primary key (the UPDATE of the cached
balance takes the row lock), then everything else. Lots (grants) are read and changed only by a
transaction that holds their account's row lock, so they need no lock of their own.
"""

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.core.mail import mail_send_after_commit

from . import posting as backend
from .charge_metadata import ChargeMetadata
from .models import CreditAccount, CreditGrant, CreditWarning, LedgerEntry, LedgerTransaction
from .units import display_gpu_hours, month_bounds

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


def decision_conflict_refuse(*, account: CreditAccount, acting_user) -> None:
    """Refuse a programme manager's decision on an account that is theirs: their own (student)
    account, or that of an organisation they belong to. The same rule the review of applications
    follows; a system action (no acting person) is never refused."""
    from portal.organisations.models import Membership

    if acting_user is None:
        return
    if account.user_id is not None and account.user_id == acting_user.pk:
        raise PermissionDenied(
            _("This is your own account, so another programme manager must decide.")
        )
    if (
        account.organisation_id is not None
        and Membership.objects.filter(
            organisation_id=account.organisation_id, user=acting_user
        ).exists()
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


# --- Grants (lots) ---------------------------------------------------------------------------


class _Replayed(Exception):  # noqa: N818 - a control-flow signal, not an error
    """ledger_post returned an earlier transaction: roll back the grant row made for this try."""


def _grant_of(idempotency_key: str) -> CreditGrant | None:
    entry = (
        LedgerEntry.objects.filter(
            transaction__idempotency_key=idempotency_key, grant__isnull=False, amount__gt=0
        )
        .select_related("grant")
        .first()
    )
    return entry.grant if entry else None


def grant_issue(
    *,
    account: CreditAccount,
    credit_seconds: int,
    rate_pkr_per_gpu_hour: Decimal,
    expires_at: dt.datetime,
    source: str,
    idempotency_key: str,
    acting_user=None,
    application=None,
    note: str = "",
    kind: str = LedgerTransaction.Kind.GRANT,
    funded_from: str = CreditAccount.System.GRANTS_ISSUED,
) -> CreditGrant:
    """Put a new lot on a holder account, paid out of a system account (grants issued, or
    adjustments for a manual correction).

    Idempotent on `idempotency_key`: a replay returns the lot the first call made (its
    `replayed` is True), or raises IdempotencyConflict when the key named another lot.
    """
    if account.is_system:
        raise LedgerError(_("Grants go to an organisation or a student."))
    if (
        isinstance(credit_seconds, bool)
        or not isinstance(credit_seconds, int)
        or credit_seconds <= 0
    ):
        raise LedgerError(_("A grant needs a positive amount."), field="amount")
    if Decimal(rate_pkr_per_gpu_hour) < 0:
        raise LedgerError(_("The rate cannot be negative."), field="rate_pkr_per_gpu_hour")
    if expires_at <= timezone.now():
        raise LedgerError(_("The expiry must be in the future."), field="expires_at")
    existing = _grant_of(idempotency_key)
    if existing is not None:
        return _same_grant_or_conflict(existing, account, credit_seconds)
    # A suspended organisation or student gets nothing new, whatever the route (approval,
    # adjustment, allowance); a replay of a grant made before the suspension is answered above.
    if CreditAccount.objects.filter(
        models.Q(organisation__is_active=False) | models.Q(user__is_active=False), pk=account.pk
    ).exists():
        raise ApplicationError(
            _("This account's holder is suspended: it cannot receive credits."), code="wrong_state"
        )
    try:
        with transaction.atomic():
            grant = CreditGrant.objects.create(
                account=account,
                source=source,
                application=application,
                amount=credit_seconds,
                remaining=0,  # ledger_post adds the amount, with the entry that explains it
                rate_pkr_per_gpu_hour=rate_pkr_per_gpu_hour,
                expires_at=expires_at,
                created_by=acting_user if getattr(acting_user, "pk", None) else None,
                note=note[:500],
            )
            txn = ledger_post(
                idempotency_key=idempotency_key,
                kind=kind,
                postings=[
                    Posting(system_account(funded_from), -credit_seconds),
                    Posting(account, credit_seconds, grant),
                ],
                description=note,
                acting_user=acting_user,
                metadata={"grant": str(grant.public_id)},
            )
            if not txn.entries.filter(grant=grant).exists():
                raise _Replayed
    except _Replayed:
        return _same_grant_or_conflict(_grant_of(idempotency_key), account, credit_seconds)
    grant.replayed = False
    return grant


def _same_grant_or_conflict(grant: CreditGrant, account: CreditAccount, amount: int):
    if grant.account_id != account.pk or grant.amount != amount:
        raise IdempotencyConflict(_("This idempotency key was already used for a different grant."))
    grant.replayed = True
    return grant


@transaction.atomic
def grant_revoke(*, grant: CreditGrant, reason: str, acting_user, ip: str | None = None) -> int:
    """Take back what is left of a lot; what was used stays used. Returns the amount revoked."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give a reason for the revocation."), field="reason")
    grant = _lot_locked(grant)
    decision_conflict_refuse(account=grant.account, acting_user=acting_user)
    if grant.revoked_at is not None:
        raise ApplicationError(_("This grant has already been revoked."))
    if grant.remaining == 0:
        raise ApplicationError(_("Nothing is left of this grant to revoke."))
    amount = grant.remaining
    ledger_post(
        idempotency_key=f"grant-revocation:{grant.public_id}",
        kind=LedgerTransaction.Kind.REVOCATION,
        postings=[
            Posting(grant.account, -amount, grant),
            Posting(system_account(CreditAccount.System.GRANTS_ISSUED), amount),
        ],
        description=reason,
        acting_user=acting_user,
        metadata={"grant": str(grant.public_id)},
    )
    CreditGrant.objects.filter(pk=grant.pk).update(revoked_at=timezone.now())
    audit_record(
        actor=acting_user,
        action="credits.grant_revoked",
        target=grant.account,
        ip=ip,
        data={"grant": str(grant.public_id), "credit_seconds": amount, "reason": reason},
    )
    return amount


def _lot_locked(grant: CreditGrant) -> CreditGrant:
    """The lot as it is now, read under its account's row lock (accounts before lots, as in
    ledger_post), so that two revocations or expiries of one lot cannot both read it full."""
    account_id = CreditGrant.objects.values_list("account_id", flat=True).get(pk=grant.pk)
    account = CreditAccount.objects.select_for_update().get(pk=account_id)
    grant = CreditGrant.objects.get(pk=grant.pk)
    grant.account = account
    return grant


def grant_expire(*, grant: CreditGrant) -> int:
    """Move the unused remainder of an expired lot to the expired account (idempotent)."""
    if not CreditGrant.objects.get(pk=grant.pk).is_expired:
        raise ApplicationError(_("This grant has not expired yet."))
    with transaction.atomic():
        grant = _lot_locked(grant)
        amount = grant.remaining
        if amount:
            ledger_post(
                idempotency_key=f"grant-expiry:{grant.public_id}",
                kind=LedgerTransaction.Kind.EXPIRY,
                postings=[
                    Posting(grant.account, -amount, grant),
                    Posting(system_account(CreditAccount.System.EXPIRED), amount),
                ],
                description=_("Unused credits expired"),
                metadata={"grant": str(grant.public_id)},
            )
        CreditGrant.objects.filter(pk=grant.pk, expired_at__isnull=True).update(
            expired_at=timezone.now()
        )
    return amount


def grants_expire_due() -> int:
    """Expire every lot past its date that still holds credits. Safe to run any number of
    times, from any number of workers: each expiry has its own idempotency key."""
    expired = 0
    due = CreditGrant.objects.filter(expires_at__lte=timezone.now(), expired_at__isnull=True)
    for grant in due.order_by("expires_at", "pk").iterator():
        expired += grant_expire(grant=grant)
    return expired


@transaction.atomic
def adjustment_post(
    *,
    account: CreditAccount,
    credit_seconds: int,
    reason: str,
    idempotency_key: str,
    acting_user,
    expires_at: dt.datetime | None = None,
    rate_pkr_per_gpu_hour: Decimal | None = None,
    ip: str | None = None,
) -> LedgerTransaction:
    """A programme manager's correction: positive adds a lot, negative takes from the lots that
    expire first. Always with a reason, always audited."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give a reason for the adjustment."), field="reason")
    if (
        isinstance(credit_seconds, bool)
        or not isinstance(credit_seconds, int)
        or not credit_seconds
    ):
        raise LedgerError(_("An adjustment needs a non-zero amount."), field="amount")
    decision_conflict_refuse(account=account, acting_user=acting_user)
    adjustments = system_account(CreditAccount.System.ADJUSTMENTS)
    if credit_seconds > 0:
        grant = grant_issue(
            funded_from=CreditAccount.System.ADJUSTMENTS,
            account=account,
            credit_seconds=credit_seconds,
            rate_pkr_per_gpu_hour=(
                settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR
                if rate_pkr_per_gpu_hour is None
                else rate_pkr_per_gpu_hour
            ),
            expires_at=expires_at or timezone.now() + dt.timedelta(days=365),
            source=CreditGrant.Source.ADJUSTMENT,
            idempotency_key=idempotency_key,
            acting_user=acting_user,
            note=reason,
            kind=LedgerTransaction.Kind.ADJUSTMENT,
        )
        txn = LedgerTransaction.objects.get(idempotency_key=idempotency_key)
        if grant.replayed:
            return txn  # the same form submitted twice: posted and audited the first time
        data = {"grant": str(grant.public_id)}
    else:
        txn = ledger_post(
            idempotency_key=idempotency_key,
            kind=LedgerTransaction.Kind.ADJUSTMENT,
            postings=[Posting(account, credit_seconds), Posting(adjustments, -credit_seconds)],
            description=reason,
            acting_user=acting_user,
        )
        if txn.replayed:
            return txn
        data = {}
    audit_record(
        actor=acting_user,
        action="credits.adjustment_posted",
        target=account,
        ip=ip,
        data={"credit_seconds": credit_seconds, "reason": reason, **data},
    )
    return txn


# --- Usage and warnings --------------------------------------------------------------------


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
    txn = LedgerTransaction.objects.get(pk=charged.transaction_id)
    if charged.replayed:
        usage = system_account(CreditAccount.System.USAGE)
        postings = [Posting(account, -credit_seconds), Posting(usage, credit_seconds)]
        _check_replay(txn, LedgerTransaction.Kind.USAGE, postings)
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


def usage_charge_batch(
    dues: Sequence[UsageDue], *, partial: bool = True
) -> tuple[list[UsageCharged], list]:
    """Charge many intervals at once (a metering tick): each is its own usage transaction, keyed
    by its idempotency key, so a retried or doubled tick charges nothing twice.

    A shortfall is not an error: time already used is charged as far as the account's open lots
    go, the unpaid rest is recorded in the transaction's metadata, and an empty account is
    charged nothing (the caller stops the sandbox). With `partial=False` a shortfall raises
    InsufficientCredits and nothing is written (what `usage_charge` wants). On PostgreSQL
    outside a transaction this is one statement whatever the number of intervals; elsewhere it
    posts one by one through `ledger_post`. Returns the results in the order given, and the
    warnings the charges crossed.

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
    order = sorted(range(len(dues)), key=lambda i: (dues[i].account_id, i))
    if not backend.one_statement_possible():
        return _usage_charge_one_by_one(dues, order, usage, partial)
    try:
        posted = backend.post_usage_batch(
            usage_account_id=usage.pk,
            description=_("GPU usage"),
            at=timezone.now(),
            items=[
                (
                    uuid.uuid4(),
                    dues[i].idempotency_key,
                    dues[i].metadata.to_json(),
                    dues[i].account_id,
                    dues[i].credit_seconds,
                )
                for i in order
            ],
            partial=partial,
        )
    except backend.PostingRefused as refusal:
        raise _refusal_error(refusal) from refusal
    results: list[UsageCharged | None] = [None] * len(dues)
    low = []
    for i, item in zip(order, posted, strict=True):
        results[i] = UsageCharged(
            dues[i].idempotency_key, item.charged, item.transaction_id, item.replayed, item.drawn
        )
        low.extend(lot.grant_id for lot in item.drawn if _below_a_threshold(lot))
    return results, _warnings_record(low)


def _usage_charge_one_by_one(dues, order, usage, partial) -> tuple[list[UsageCharged], list]:
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
                    description=_("GPU usage"),
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
            results[i] = UsageCharged(due.idempotency_key, take, txn.pk, txn.replayed, txn.drawn)
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


def _below_a_threshold(lot) -> bool:
    lowest = max(settings.CREDITS_WARNING_THRESHOLDS_PERCENT, default=0)
    return lot.remaining * 100 <= lowest * lot.amount


def warnings_check(*, grant_ids) -> list[CreditWarning]:
    """Record (once) each threshold a lot has fallen to, and tell the organisation's owners."""
    return _warnings_record(list(grant_ids))


def _warnings_record(grant_ids: list[int]) -> list[CreditWarning]:
    if not grant_ids:
        return []
    thresholds = sorted(settings.CREDITS_WARNING_THRESHOLDS_PERCENT, reverse=True)
    created = []
    for grant in CreditGrant.objects.filter(pk__in=grant_ids).select_related("account"):
        for threshold in thresholds:
            if grant.remaining * 100 > threshold * grant.amount:
                continue
            warning, is_new = CreditWarning.objects.get_or_create(
                grant=grant, threshold_percent=threshold
            )
            if is_new:
                created.append(warning)
                _warning_notify(warning)
    return created


def _warning_recipients(account: CreditAccount) -> list:
    from portal.organisations.models import Membership

    if account.kind == CreditAccount.Kind.STUDENT:
        return [account.user]
    owners = (
        Membership.objects.managers()
        .filter(organisation_id=account.organisation_id)
        .select_related("user")
    )
    return [m.user for m in owners]


def _warning_notify(warning: CreditWarning) -> None:
    grant = warning.grant
    for person in _warning_recipients(grant.account):
        mail_send_after_commit(
            template="credits/email/low_balance",
            to=person.email,
            language=person.language,
            context={
                "threshold": warning.threshold_percent,
                "remaining_gpu_hours": display_gpu_hours(grant.remaining),
                "granted_gpu_hours": display_gpu_hours(grant.amount),
                "expires_at": grant.expires_at,
                "holder": str(grant.account.organisation or grant.account.user),
                "url": settings.SITE_URL,
            },
        )


# --- Student allowance ----------------------------------------------------------------------


def allowance_key(user, month: dt.date) -> str:
    return f"student-allowance:{user.pk}:{month:%Y-%m}"


def student_allowance_grant(*, user, month: dt.date | None = None) -> CreditGrant | None:
    """This month's allowance for one student, once (the key is per student and month).

    The cohort's override wins over the programme default; zero means no allowance.
    """
    from portal.onboarding.models import StudentProfile

    month = month or timezone.localdate()
    already = _grant_of(allowance_key(user, month))
    if already is not None:
        return already  # once a month, whatever the cohort's allowance has become since
    profile = StudentProfile.objects.select_related("cohort").filter(user=user).first()
    if profile is None or not user.is_active:
        return None
    hours = settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS
    if profile.cohort and profile.cohort.monthly_allowance_gpu_hours is not None:
        hours = profile.cohort.monthly_allowance_gpu_hours
    if hours <= 0:
        return None
    _start, following = month_bounds(month)
    if following <= timezone.now():
        return None  # a month already over grants nothing
    return grant_issue(
        account=account_for_student(user),
        credit_seconds=hours * 3600,
        rate_pkr_per_gpu_hour=settings.STUDENT_ALLOWANCE_RATE_PKR_PER_GPU_HOUR,
        expires_at=following,
        source=CreditGrant.Source.ALLOWANCE,
        idempotency_key=allowance_key(user, month),
        note=_("Monthly student allowance %(month)s") % {"month": f"{month:%Y-%m}"},
        kind=LedgerTransaction.Kind.ALLOWANCE,
    )


def student_allowances_grant_month(*, month: dt.date | None = None) -> int:
    """Every student's allowance for the month; a second run grants nothing new."""
    from portal.onboarding.models import StudentProfile

    count = 0
    for profile in StudentProfile.objects.select_related("user").iterator():
        if student_allowance_grant(user=profile.user, month=month) is not None:
            count += 1
    return count
