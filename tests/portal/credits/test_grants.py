"""Lots: issued once per key, expired, revoked, and corrected by programme managers."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError
from portal.credits.models import CreditAccount, CreditGrant, LedgerTransaction
from portal.credits.services import (
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
    adjustment_post,
    grant_expire,
    grant_issue,
    grant_revoke,
    grants_expire_due,
    system_account,
)
from tests.portal.credits.helpers import (
    RATE,
    adjustments,
    assert_books_consistent,
    balance_of,
    books,
    charge,
    drawn,
    entries_sum,
    lapse,
    lot,
    org_account,
    remaining_of,
    usage,
)

pytestmark = pytest.mark.django_db


# --- Issuing --------------------------------------------------------------------------------


def test_a_grant_is_one_balanced_transaction_that_funds_the_lot():
    # given an organisation's account
    account = org_account()

    # when a lot of 1000 credit-seconds is issued
    grant = lot(account, 1000, key="grant-1")

    # then one transaction of two legs moves 1000 from grants issued to the lot
    txn = LedgerTransaction.objects.get(idempotency_key="grant-1")
    assert txn.kind == LedgerTransaction.Kind.GRANT
    legs = sorted(txn.entries.values_list("account_id", "grant_id", "amount"))
    issued = system_account(CreditAccount.System.GRANTS_ISSUED)
    assert legs == sorted([(issued.pk, None, -1000), (account.pk, grant.pk, 1000)])
    assert balance_of(account) == 1000
    assert remaining_of(grant) == 1000
    assert grant.amount == 1000
    assert grant.rate_pkr_per_gpu_hour == RATE
    assert_books_consistent()


def test_issuing_a_grant_twice_with_one_key_makes_one_lot():
    # given a lot issued under a key
    account = org_account()
    first = lot(account, 1000, key="application:42")
    before = books()

    # when it is issued again (a double click on approve)
    again = lot(account, 1000, key="application:42")

    # then the first lot comes back and nothing new is written
    assert again.pk == first.pk
    assert books() == before


@pytest.mark.parametrize("on_other_account", [False, True], ids=["other-amount", "other-account"])
def test_reusing_a_grant_key_for_a_different_lot_is_a_conflict(on_other_account):
    # given a lot of 1000 issued under a key
    account, other = org_account(), org_account()
    lot(account, 1000, key="application:42")
    before = books()

    # when the key is used for a different lot
    with pytest.raises(IdempotencyConflict):
        lot(other if on_other_account else account, 500, key="application:42")

    # then nothing is written
    assert books() == before


@pytest.mark.parametrize("seconds", [0, -100, 1.5, 100.0, True, Decimal("100")], ids=str)
def test_grant_issue_refuses_amounts_that_are_not_positive_integers(seconds):
    # given an account
    account = org_account()
    before = books()

    # when a lot of a bad amount is issued
    with pytest.raises(LedgerError):
        lot(account, seconds)

    # then nothing is written
    assert books() == before


@pytest.mark.parametrize("case", ["past-expiry", "negative-rate", "system-account"])
def test_grant_issue_refuses_bad_lots_and_writes_nothing(case):
    # given an account
    account = org_account()
    before = books()
    kwargs = {
        "account": account,
        "credit_seconds": 1000,
        "rate_pkr_per_gpu_hour": RATE,
        "expires_at": timezone.now() + dt.timedelta(days=30),
        "source": CreditGrant.Source.APPLICATION,
        "idempotency_key": "bad-lot",
    }
    if case == "past-expiry":
        kwargs["expires_at"] = timezone.now() - dt.timedelta(seconds=1)
    elif case == "negative-rate":
        kwargs["rate_pkr_per_gpu_hour"] = Decimal("-0.01")
    else:
        kwargs["account"] = usage()

    # when the lot is issued
    with pytest.raises(LedgerError):
        grant_issue(**kwargs)

    # then nothing is written
    assert books() == before


# --- Expiry ---------------------------------------------------------------------------------


def test_expiry_moves_only_the_unused_remainder_to_the_expired_account():
    # given a lot of 1000 of which 300 were used, now past its expiry
    account = org_account()
    grant = lot(account, 1000, days=1)
    charge(account, 300, "use-1")
    lapse(grant)
    expired = system_account(CreditAccount.System.EXPIRED)
    expired_before = entries_sum(account=expired)

    # when it is expired
    amount = grant_expire(grant=grant)

    # then the 700 left moves to the expired account; the 300 used stay used
    assert amount == 700
    txn = LedgerTransaction.objects.get(idempotency_key=f"grant-expiry:{grant.public_id}")
    assert txn.kind == LedgerTransaction.Kind.EXPIRY
    assert sorted(txn.entries.values_list("account_id", "grant_id", "amount")) == sorted(
        [(account.pk, grant.pk, -700), (expired.pk, None, 700)]
    )
    assert entries_sum(account=expired) - expired_before == 700
    assert entries_sum(account=usage(), transaction__idempotency_key="use-1") == 300
    grant.refresh_from_db()
    assert grant.remaining == 0
    assert grant.expired_at is not None
    assert balance_of(account) == 0
    assert_books_consistent()


def test_expiring_twice_is_expiring_once():
    # given an expired lot
    account = org_account()
    grant = lot(account, 1000, days=1)
    lapse(grant)
    grant_expire(grant=grant)
    before = books()

    # when it is expired again
    amount = grant_expire(grant=grant)

    # then nothing more moves and nothing is written
    assert amount == 0
    assert books() == before


def test_a_fully_used_lot_expires_without_a_transaction():
    # given a lot used up, then past its expiry
    account = org_account()
    grant = lot(account, 100, days=1)
    charge(account, 100, "use-all")
    lapse(grant)
    transactions = LedgerTransaction.objects.count()

    # when it is expired
    amount = grant_expire(grant=grant)

    # then nothing moves, but the lot is marked expired
    assert amount == 0
    assert LedgerTransaction.objects.count() == transactions
    grant.refresh_from_db()
    assert grant.expired_at is not None


def test_a_lot_cannot_be_expired_before_its_time():
    # given an open lot
    account = org_account()
    grant = lot(account, 1000)
    before = books()

    # when it is expired early
    with pytest.raises(ApplicationError):
        grant_expire(grant=grant)

    # then nothing is written
    assert books() == before


def test_the_expiry_job_expires_what_is_due_and_a_second_run_changes_nothing():
    # given two lots past their expiry and one open lot
    account = org_account()
    due_one = lot(account, 100, days=1)
    due_two = lot(account, 250, days=2)
    open_lot = lot(account, 1000, days=30)
    lapse(due_one, seconds_ago=60)
    lapse(due_two)

    # when the job runs
    first = grants_expire_due()

    # then both due lots are expired and the open one is untouched
    assert first == 350
    assert [remaining_of(g) for g in (due_one, due_two, open_lot)] == [0, 0, 1000]
    assert balance_of(account) == 1000
    before = books()

    # and when it runs again, nothing moves and nothing is written
    assert grants_expire_due() == 0
    assert books() == before
    assert_books_consistent()


# --- Revocation -----------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_revocation_needs_a_reason(reason, programme_manager):
    # given a lot
    grant = lot(org_account(), 1000)
    before = books()

    # when it is revoked without a reason
    with pytest.raises(ApplicationError) as excinfo:
        grant_revoke(grant=grant, reason=reason, acting_user=programme_manager)

    # then nothing is written, not even an audit event
    assert excinfo.value.field == "reason"
    assert books() == before


def test_revocation_takes_back_what_is_left_and_is_audited(programme_manager):
    # given a lot of 1000 with 400 used
    account = org_account()
    grant = lot(account, 1000)
    other = lot(account, 500, days=60)
    charge(account, 400, "use-1")

    # when a programme manager revokes it
    amount = grant_revoke(
        grant=grant, reason="Misuse", acting_user=programme_manager, ip="10.0.0.9"
    )

    # then the 600 left go back to grants issued; the other lot and the used 400 stay
    assert amount == 600
    txn = LedgerTransaction.objects.get(idempotency_key=f"grant-revocation:{grant.public_id}")
    assert txn.kind == LedgerTransaction.Kind.REVOCATION
    assert txn.created_by == programme_manager
    issued = system_account(CreditAccount.System.GRANTS_ISSUED)
    assert sorted(txn.entries.values_list("account_id", "grant_id", "amount")) == sorted(
        [(account.pk, grant.pk, -600), (issued.pk, None, 600)]
    )
    grant.refresh_from_db()
    assert grant.remaining == 0
    assert grant.revoked_at is not None
    assert remaining_of(other) == 500
    assert balance_of(account) == 500
    # and the revocation is in the audit log
    event = AuditEvent.objects.get(action="credits.grant_revoked")
    assert event.actor == programme_manager
    assert event.ip == "10.0.0.9"
    assert event.target_id == str(account.public_id)
    assert event.data == {
        "grant": str(grant.public_id),
        "credit_seconds": 600,
        "reason": "Misuse",
    }
    assert_books_consistent()


def test_a_lot_cannot_be_revoked_twice(programme_manager):
    # given a revoked lot
    grant = lot(org_account(), 1000)
    grant_revoke(grant=grant, reason="Misuse", acting_user=programme_manager)
    before = books()

    # when it is revoked again
    with pytest.raises(ApplicationError):
        grant_revoke(grant=grant, reason="Again", acting_user=programme_manager)

    # then nothing is written
    assert books() == before


def test_a_used_up_lot_has_nothing_to_revoke(programme_manager):
    # given a lot used up
    account = org_account()
    grant = lot(account, 100)
    charge(account, 100, "use-all")
    before = books()

    # when it is revoked
    with pytest.raises(ApplicationError):
        grant_revoke(grant=grant, reason="Misuse", acting_user=programme_manager)

    # then nothing is written
    assert books() == before


# --- Adjustments ----------------------------------------------------------------------------


def test_a_positive_adjustment_adds_a_lot(programme_manager):
    # given an account with one lot
    account = org_account()
    lot(account, 1000)

    # when a programme manager adds 500
    txn = adjustment_post(
        account=account,
        credit_seconds=500,
        reason="Outage compensation",
        idempotency_key="adj-1",
        acting_user=programme_manager,
    )

    # then a new adjustment lot of 500, a year long, funds the account
    assert txn.kind == LedgerTransaction.Kind.ADJUSTMENT
    assert entries_sum(transaction=txn) == 0
    grant = CreditGrant.objects.get(entries__transaction=txn)
    assert grant.source == CreditGrant.Source.ADJUSTMENT
    assert grant.account == account
    assert (grant.amount, grant.remaining) == (500, 500)
    assert grant.note == "Outage compensation"
    assert grant.created_by == programme_manager
    expected_expiry = timezone.now() + dt.timedelta(days=365)
    assert abs(grant.expires_at - expected_expiry) < dt.timedelta(minutes=1)
    assert balance_of(account) == 1500
    event = AuditEvent.objects.get(action="credits.adjustment_posted")
    assert event.data["credit_seconds"] == 500
    assert event.data["grant"] == str(grant.public_id)
    assert_books_consistent()


def test_a_negative_adjustment_takes_from_the_lots_that_expire_first(programme_manager):
    # given two lots
    account = org_account()
    late = lot(account, 1000, days=60)
    early = lot(account, 100, days=5)

    # when a programme manager takes 250 back
    txn = adjustment_post(
        account=account,
        credit_seconds=-250,
        reason="Double grant",
        idempotency_key="adj-2",
        acting_user=programme_manager,
    )

    # then the lot that expires first is emptied and the next pays the rest, into adjustments
    assert drawn(txn) == [(early.pk, -100), (late.pk, -150)]
    assert entries_sum(transaction=txn, account=adjustments()) == 250
    assert txn.created_by == programme_manager
    assert balance_of(account) == 850
    assert AuditEvent.objects.filter(action="credits.adjustment_posted").count() == 1
    assert_books_consistent()


def test_a_negative_adjustment_larger_than_the_balance_writes_nothing(programme_manager):
    # given an account with 100
    account = org_account()
    lot(account, 100)
    before = books()

    # when 101 is taken back
    with pytest.raises(InsufficientCredits):
        adjustment_post(
            account=account,
            credit_seconds=-101,
            reason="Too much",
            idempotency_key="adj-3",
            acting_user=programme_manager,
        )

    # then nothing is written, not even the audit event
    assert books() == before


@pytest.mark.parametrize("seconds", [500, -500], ids=["positive", "negative"])
def test_replaying_an_adjustment_returns_it_and_writes_nothing_not_even_an_audit_event(
    seconds, programme_manager
):
    # given an adjustment already posted
    account = org_account()
    lot(account, 1000)
    kwargs = {
        "account": account,
        "credit_seconds": seconds,
        "reason": "Outage compensation",
        "idempotency_key": "adj-1",
        "acting_user": programme_manager,
    }
    first = adjustment_post(**kwargs)
    before = books()

    # when the form is submitted again
    again = adjustment_post(**kwargs)

    # then the first transaction comes back and nothing is written, the audit log included
    assert again.pk == first.pk
    assert books() == before


def test_reusing_an_adjustment_key_for_another_amount_is_a_conflict(programme_manager):
    # given a positive adjustment of 500 under a key
    account = org_account()
    adjustment_post(
        account=account,
        credit_seconds=500,
        reason="Outage compensation",
        idempotency_key="adj-1",
        acting_user=programme_manager,
    )
    before = books()

    # when the key is used for an adjustment of 900
    with pytest.raises(IdempotencyConflict):
        adjustment_post(
            account=account,
            credit_seconds=900,
            reason="Something else",
            idempotency_key="adj-1",
            acting_user=programme_manager,
        )

    # then nothing is written: no lot, no audit event claiming 900 were added
    assert books() == before


@pytest.mark.parametrize(
    ("seconds", "reason", "error"),
    [
        (500, "", ApplicationError),
        (500, "   ", ApplicationError),
        (-500, None, ApplicationError),
        (0, "Nothing", LedgerError),
        (1.5, "Float", LedgerError),
        (True, "Bool", LedgerError),
    ],
    ids=["empty-reason", "blank-reason", "no-reason", "zero", "float", "bool"],
)
def test_an_adjustment_needs_a_reason_and_a_whole_amount(seconds, reason, error, programme_manager):
    # given a funded account
    account = org_account()
    lot(account, 1000)
    before = books()

    # when the adjustment lacks a reason or a proper amount
    with pytest.raises(error):
        adjustment_post(
            account=account,
            credit_seconds=seconds,
            reason=reason,
            idempotency_key="adj-bad",
            acting_user=programme_manager,
        )

    # then nothing is written
    assert books() == before
