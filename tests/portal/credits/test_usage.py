"""Usage charges (usage_charge, the one-item case of usage_charge_batch): which lots pay, once
per key, in full or not at all."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from portal.credits.charge_metadata import ChargeMetadata
from portal.credits.models import CreditGrant, LedgerTransaction
from portal.credits.services import (
    InsufficientCredits,
    LedgerError,
    UsageDue,
    grant_issue,
    usage_charge_batch,
)
from tests.portal.credits.helpers import (
    RATE,
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
)

pytestmark = pytest.mark.django_db


# --- Which lot usage draws from -------------------------------------------------------------


def test_usage_draws_from_the_lot_that_expires_first():
    # given a lot expiring in 60 days, issued before one expiring in 10 days
    account = org_account()
    late = lot(account, 1000, days=60)
    early = lot(account, 1000, days=10)

    # when 300 is used
    txn = charge(account, 300, "use-1")

    # then it all comes out of the lot that expires first
    assert drawn(txn) == [(early.pk, -300)]
    assert remaining_of(early) == 700
    assert remaining_of(late) == 1000
    assert balance_of(account) == 1700
    assert entries_sum(transaction=txn) == 0


def test_usage_larger_than_the_first_lot_continues_in_the_next():
    # given three lots expiring in 5, 10 and 20 days
    account = org_account()
    third = lot(account, 1000, days=20)
    first = lot(account, 100, days=5)
    second = lot(account, 200, days=10)

    # when 450 is used
    txn = charge(account, 450, "use-1")

    # then the first two lots are emptied and the third pays the rest
    assert drawn(txn) == [(first.pk, -100), (second.pk, -200), (third.pk, -150)]
    assert [remaining_of(g) for g in (first, second, third)] == [0, 0, 850]
    assert balance_of(account) == 850
    assert_books_consistent()


def test_lots_that_expire_together_are_drawn_oldest_first():
    # given two lots with the very same expiry
    account = org_account()
    expires_at = timezone.now() + dt.timedelta(days=30)
    older, newer = (
        grant_issue(
            account=account,
            credit_seconds=100,
            rate_pkr_per_gpu_hour=RATE,
            expires_at=expires_at,
            source=CreditGrant.Source.APPLICATION,
            idempotency_key=f"same-expiry-{n}",
        )
        for n in range(2)
    )

    # when 150 is used
    txn = charge(account, 150, "use-1")

    # then the lot issued first is emptied first
    assert drawn(txn) == [(older.pk, -100), (newer.pk, -50)]


def test_an_expired_lot_is_never_drawn_even_before_the_expiry_job_ran():
    # given a lot past its expiry (not yet moved to the expired account) and an open one
    account = org_account()
    stale = lot(account, 1000, days=1)
    fresh = lot(account, 100, days=30)
    lapse(stale)
    before = books()

    # when more is used than the open lot holds (the cached balance would cover it)
    with pytest.raises(InsufficientCredits):
        charge(account, 200, "use-too-much")

    # then nothing is written
    assert books() == before

    # and when less is used, only the open lot pays
    txn = charge(account, 60, "use-ok")
    assert drawn(txn) == [(fresh.pk, -60)]
    assert remaining_of(stale) == 1000
    assert_books_consistent()


# --- Idempotency ----------------------------------------------------------------------------


def test_replaying_a_key_returns_the_first_transaction_and_writes_nothing():
    # given a charge already posted
    account = org_account()
    lot(account, 1000)
    first = charge(account, 300, "usage:job-7")
    before = books()

    # when the same charge is posted again (a retried task)
    again = charge(account, 300, "usage:job-7")

    # then the first transaction comes back and nothing new is written
    assert again.pk == first.pk
    assert books() == before
    assert balance_of(account) == 700


def test_a_key_refused_for_insufficient_credits_can_be_used_once_there_is_enough():
    # given a charge refused for lack of credits
    account = org_account()
    lot(account, 100)
    with pytest.raises(InsufficientCredits):
        charge(account, 300, "usage:job-8")
    assert not LedgerTransaction.objects.filter(idempotency_key="usage:job-8").exists()

    # when credits arrive and the same charge is retried
    lot(account, 1000)
    txn = charge(account, 300, "usage:job-8")

    # then it goes through, once
    assert txn.idempotency_key == "usage:job-8"
    assert balance_of(account) == 800


# --- Refusals: nothing written --------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0, -100, 1.5, 100.0, True, Decimal("100")], ids=str)
def test_usage_charge_refuses_amounts_that_are_not_positive_integers(seconds):
    # given a funded account
    account = org_account()
    lot(account, 1000)
    before = books()

    # when a charge is not a positive whole number of credit-seconds
    with pytest.raises(LedgerError):
        charge(account, seconds, "bad-charge")

    # then nothing is written
    assert books() == before


# --- Not enough credits ---------------------------------------------------------------------


def test_insufficient_credits_leave_balances_lots_and_entries_unchanged():
    # given an account with two lots holding 300 in all, one partly used
    account = org_account()
    lot(account, 100, days=5)
    lot(account, 250, days=10)
    charge(account, 50, "use-1")
    before = books()

    # when one more credit-second than is left is charged
    with pytest.raises(InsufficientCredits) as excinfo:
        charge(account, 301, "use-2")

    # then the charge is refused with its code, and nothing is written
    assert excinfo.value.code == "insufficient_credits"
    assert books() == before
    assert balance_of(account) == 300


def test_an_empty_account_cannot_be_charged():
    # given an account that never had credits
    account = org_account()
    before = books()

    # when it is charged
    with pytest.raises(InsufficientCredits):
        charge(account, 1, "use-1")

    # then nothing is written
    assert books() == before


def test_a_batch_to_be_paid_in_full_writes_nothing_when_one_charge_falls_short():
    # given an account holding 100
    account = org_account()
    lot(account, 100)
    before = books()

    # when two charges of 60 are to be paid in full, in one batch
    with pytest.raises(InsufficientCredits):
        usage_charge_batch(
            [
                UsageDue(account.pk, 60, "whole:1", ChargeMetadata(sandbox="t")),
                UsageDue(account.pk, 60, "whole:2", ChargeMetadata(sandbox="t")),
            ],
            partial=False,
        )

    # then not even the first, which it could pay, is written
    assert books() == before
