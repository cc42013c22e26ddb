"""Lots: grants issued (from an application, an adjustment or an allowance), revoked, expired,
and programme managers' corrections. Each moves credits through `ledger_post`."""

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError

from ..models import CreditAccount, CreditGrant, LedgerTransaction
from ..selectors import grant_for_key
from .ledger import (
    IdempotencyConflict,
    LedgerError,
    Posting,
    decision_conflict_refuse,
    ledger_post,
    system_account,
)
from .rollups import rollups_refresh_soon


class _Replayed(Exception):  # noqa: N818 - a control-flow signal, not an error
    """ledger_post returned an earlier transaction: roll back the grant row made for this try."""


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
    existing = grant_for_key(idempotency_key=idempotency_key)
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
        return _same_grant_or_conflict(
            grant_for_key(idempotency_key=idempotency_key), account, credit_seconds
        )
    rollups_refresh_soon()
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
    rollups_refresh_soon()
    audit_record(
        actor=acting_user,
        action=AuditAction.CREDITS_GRANT_REVOKED,
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
    if expired:
        rollups_refresh_soon()
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
        rollups_refresh_soon()
        data = {}
    audit_record(
        actor=acting_user,
        action=AuditAction.CREDITS_ADJUSTMENT_POSTED,
        target=account,
        ip=ip,
        data={"credit_seconds": credit_seconds, "reason": reason, **data},
    )
    return txn
