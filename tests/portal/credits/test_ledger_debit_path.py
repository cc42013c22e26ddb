"""The one-statement debit (`credits_post_debit`) keeps every promise of the books.

Most ledger tests run inside a test transaction, where ledger_post takes the general path
(`credits_apply_postings`). A usage charge made outside any transaction, as every metering tick
and the concurrency tests make them, goes instead through the flat debit function (called by
`credits_post_usage`, for usage charges). Here the same scenarios run committed for real, and
each checks that the debit function is the one that ran, so the two implementations are held to
one set of behaviours.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from portal.credits.models import CreditAccount, LedgerEntry, LedgerTransaction
from portal.credits.services import (
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
    Posting,
    ledger_post,
    system_account,
)
from tests.portal.credits import test_ledger, test_usage
from tests.portal.credits.helpers import (
    assert_books_consistent,
    balance_of,
    books,
    charge,
    lot,
    org_account,
    remaining_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("The one-statement debit is PostgreSQL's; `make test` runs this")


@pytest.fixture(autouse=True)
def _system_accounts():
    """The system accounts exist before anything is posted, as migration 0002 makes them (a
    committed test's flush removes them: without this the first charge would create one)."""
    for code in CreditAccount.System.values:
        system_account(code)


def _debit_calls(captured) -> int:
    """Calls of the debit function, directly or through the usage batch (which posts every
    item through it)."""
    return sum(
        "credits_post_debit(" in query["sql"] or "credits_post_usage(" in query["sql"]
        for query in captured.captured_queries
    )


# The scenarios of test_usage that charge, run here outside any transaction.
SCENARIOS = [
    test_usage.test_usage_draws_from_the_lot_that_expires_first,
    test_usage.test_usage_larger_than_the_first_lot_continues_in_the_next,
    test_usage.test_lots_that_expire_together_are_drawn_oldest_first,
    test_usage.test_an_expired_lot_is_never_drawn_even_before_the_expiry_job_ran,
    test_usage.test_replaying_a_key_returns_the_first_transaction_and_writes_nothing,
    test_usage.test_a_key_refused_for_insufficient_credits_can_be_used_once_there_is_enough,
    test_usage.test_insufficient_credits_leave_balances_lots_and_entries_unchanged,
    test_usage.test_an_empty_account_cannot_be_charged,
    test_usage.test_a_batch_to_be_paid_in_full_writes_nothing_when_one_charge_falls_short,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__[5:])
def test_the_one_statement_debit_keeps_the_general_paths_promises(scenario):
    # when a usage scenario runs committed, outside any transaction
    with CaptureQueriesContext(connection) as captured:
        scenario()

    # then its debits went through the debit function, and the books hold
    assert _debit_calls(captured) >= 1
    assert_books_consistent()


@test_ledger.OTHER_POSTINGS_UNDER_ONE_KEY
def test_a_key_replayed_for_another_debit_is_a_conflict(seconds, kind, on_other_account):
    with CaptureQueriesContext(connection) as captured:
        test_ledger.test_replaying_a_key_for_a_different_posting_is_a_conflict(
            seconds, kind, on_other_account
        )
    assert _debit_calls(captured) >= 2  # the first charge, and the refused replay


def test_a_debit_returns_the_lots_it_drew_as_they_stand_after_it():
    # given two lots, the first to expire holding 100
    account = org_account()
    first = lot(account, 100, days=5)
    second = lot(account, 1000, days=10)

    # when 250 is charged outside any transaction
    txn = charge(account, 250, "use-both")

    # then the transaction returned is the row written (built without reading it back)
    stored = LedgerTransaction.objects.get(idempotency_key="use-both")
    fields = ["pk", "public_id", "kind", "description", "metadata", "created_at"]
    assert [getattr(txn, name) for name in fields] == [getattr(stored, name) for name in fields]
    # and the drawn lots (what warnings are decided from) are both, with what they hold now
    assert not txn.replayed
    assert [(d.grant_id, d.remaining, d.amount) for d in txn.drawn] == [
        (first.pk, 0, 100),
        (second.pk, 850, 1000),
    ]
    # and the system leg is written once, for the whole amount
    usage = system_account(CreditAccount.System.USAGE)
    assert list(
        LedgerEntry.objects.filter(transaction=txn, account=usage).values_list("amount", flat=True)
    ) == [250]
    assert balance_of(account) == 850
    assert (remaining_of(first), remaining_of(second)) == (0, 850)


@pytest.mark.parametrize("ghost_is", ["holder", "system"])
def test_a_debit_naming_an_account_that_does_not_exist_writes_nothing(ghost_is):
    # given a funded account and an account object whose row does not exist
    account = org_account()
    lot(account, 1000)
    usage = system_account(CreditAccount.System.USAGE)
    ghost = CreditAccount(
        pk=987_654_321,
        kind="system" if ghost_is == "system" else "organisation",
        balance=None if ghost_is == "system" else 0,
        system_code="ghost" if ghost_is == "system" else None,
    )
    postings = (
        [Posting(account, -100), Posting(ghost, 100)]
        if ghost_is == "system"
        else [Posting(ghost, -100), Posting(usage, 100)]
    )
    before = books()

    # when the debit is posted outside any transaction
    with CaptureQueriesContext(connection) as captured, pytest.raises(LedgerError) as excinfo:
        ledger_post(
            idempotency_key="to-a-ghost", kind=LedgerTransaction.Kind.USAGE, postings=postings
        )

    # then the debit function refused it as unknown, and not even the transaction row remains
    assert _debit_calls(captured) == 1
    assert not isinstance(excinfo.value, InsufficientCredits | IdempotencyConflict)
    assert books() == before


def test_a_holder_account_posing_as_the_system_side_is_refused():
    # given two funded organisation accounts, one dressed up as a system account in Python
    payer, payee = org_account(), org_account()
    lot(payer, 1000)
    disguised = CreditAccount.objects.get(pk=payee.pk)
    disguised.kind = CreditAccount.Kind.SYSTEM
    before = books()

    # when the payer is debited in its favour
    with CaptureQueriesContext(connection) as captured, pytest.raises(LedgerError):
        ledger_post(
            idempotency_key="to-a-disguise",
            kind=LedgerTransaction.Kind.USAGE,
            postings=[Posting(payer, -100), Posting(disguised, 100)],
        )

    # then the database, which knows the account's real kind, refuses it
    assert _debit_calls(captured) == 1
    assert books() == before


def test_a_debit_from_a_named_lot_is_not_the_debit_shape_and_takes_the_general_path():
    # given an account with two lots, and a correction that takes from the later one by name
    account = org_account()
    lot(account, 100, days=5)
    named = lot(account, 1000, days=30)
    adjustments = system_account(CreditAccount.System.ADJUSTMENTS)

    # when it is posted outside any transaction
    with CaptureQueriesContext(connection) as captured:
        txn = ledger_post(
            idempotency_key="take-from-named",
            kind=LedgerTransaction.Kind.ADJUSTMENT,
            postings=[Posting(account, -40, named), Posting(adjustments, 40)],
        )

    # then the general function posted it, from the named lot and not the one expiring first
    assert _debit_calls(captured) == 0
    assert any("credits_post(" in query["sql"] for query in captured.captured_queries)
    assert [(d.grant_id, d.remaining) for d in txn.drawn] == [(named.pk, 960)]
    assert balance_of(account) == 1060
    assert_books_consistent()


@pytest.mark.parametrize("on_other_account", [False, True], ids=["other-amount", "other-account"])
def test_a_usage_charge_replayed_for_another_charge_is_a_conflict(on_other_account):
    # given a charge of 300 under a key, posted as metering posts it (the usage batch)
    account, other = org_account(), org_account()
    lot(account, 1000)
    lot(other, 1000)
    first = charge(account, 300, "usage:job-9")
    before = books()

    # when the key is charged again for another amount, or to another account
    target, seconds = (other, 300) if on_other_account else (account, 301)
    with CaptureQueriesContext(connection) as captured, pytest.raises(IdempotencyConflict):
        charge(target, seconds, "usage:job-9")

    # then the batch found the first transaction, and nothing is written
    assert _debit_calls(captured) == 1
    assert books() == before
    # and the same charge again returns the first, as a replay
    again = charge(account, 300, "usage:job-9")
    assert (again.pk, first.replayed, again.replayed, again.drawn) == (first.pk, False, True, [])
    assert books() == before
