"""The one writer's door for any transaction: ledger_post balances, refuses, replays, and the
ledger's rows cannot be changed afterwards."""

from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from portal.core.models import AppendOnlyError
from portal.credits.models import CreditAccount, LedgerEntry, LedgerTransaction
from portal.credits.services import (
    MAX_AMOUNT,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
    Posting,
    ledger_post,
)
from tests.portal.credits.helpers import (
    adjustments,
    assert_books_consistent,
    balance_of,
    books,
    charge,
    entries_sum,
    lot,
    org_account,
    remaining_of,
    usage,
)

pytestmark = pytest.mark.django_db


# --- Balanced transactions ------------------------------------------------------------------


def test_ledger_post_records_every_leg_and_sums_to_zero():
    # given a lot that has been partly used
    account = org_account()
    grant = lot(account, 1000)
    charge(account, 400, "use-1")

    # when a three-legged correction gives 150 back to the lot, split over two system accounts
    txn = ledger_post(
        idempotency_key="refund-1",
        kind=LedgerTransaction.Kind.ADJUSTMENT,
        postings=[
            Posting(usage(), -100),
            Posting(adjustments(), -50),
            Posting(account, 150, grant),
        ],
        description="refund of a failed job",
    )

    # then all three legs are written and the books balance
    assert txn.entries.count() == 3
    assert entries_sum(transaction=txn) == 0
    assert balance_of(account) == 750
    assert remaining_of(grant) == 750
    assert_books_consistent()


# --- Idempotency ----------------------------------------------------------------------------


def test_replaying_a_key_through_ledger_post_returns_the_same_transaction():
    # given a ledger_post already made
    account = org_account()
    grant = lot(account, 1000)
    postings = [Posting(account, -10, grant), Posting(adjustments(), 10)]
    first = ledger_post(
        idempotency_key="direct-1", kind=LedgerTransaction.Kind.ADJUSTMENT, postings=postings
    )
    before = books()

    # when it is posted again
    again = ledger_post(
        idempotency_key="direct-1", kind=LedgerTransaction.Kind.ADJUSTMENT, postings=postings
    )

    # then nothing changes, and the caller can tell the second was a replay
    assert again.pk == first.pk
    assert (first.replayed, again.replayed) == (False, True)
    assert books() == before


# Also run committed, through the one-statement debit, by test_ledger_debit_path.
OTHER_POSTINGS_UNDER_ONE_KEY = pytest.mark.parametrize(
    ("seconds", "kind", "on_other_account"),
    [
        (301, LedgerTransaction.Kind.USAGE, False),
        (300, LedgerTransaction.Kind.ADJUSTMENT, False),
        (300, LedgerTransaction.Kind.USAGE, True),
    ],
    ids=["other-amount", "other-kind", "other-account"],
)


@OTHER_POSTINGS_UNDER_ONE_KEY
def test_replaying_a_key_for_a_different_posting_is_a_conflict(seconds, kind, on_other_account):
    # given a charge of 300 on one account under a key
    account = org_account()
    other = org_account()
    lot(account, 1000)
    lot(other, 1000)
    charge(account, 300, "usage:job-7")
    before = books()
    target = other if on_other_account else account

    # when the key is used again for something else
    with pytest.raises(IdempotencyConflict):
        ledger_post(
            idempotency_key="usage:job-7",
            kind=kind,
            postings=[Posting(target, -seconds), Posting(usage(), seconds)],
        )

    # then nothing is written
    assert books() == before


# --- Refusals: nothing written --------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [0, 1.0, 100.0, True, Decimal("100"), MAX_AMOUNT + 1, "100"],
    ids=["zero", "float-one", "float", "bool", "decimal", "too-large", "string"],
)
def test_ledger_post_refuses_bad_amounts_and_writes_nothing(amount):
    # given a funded account
    account = org_account()
    lot(account, 1000)
    before = books()

    # when a leg carries an amount that is not a whole, non-zero, in-range integer
    with pytest.raises(LedgerError):
        ledger_post(
            idempotency_key="bad-amount",
            kind=LedgerTransaction.Kind.USAGE,
            postings=[Posting(usage(), amount), Posting(account, -100)],
        )

    # then nothing is written
    assert books() == before


def _postings_for(case: str, account, grant, other_account, other_grant) -> list[Posting]:
    return {
        "unbalanced": [Posting(account, -100), Posting(usage(), 99)],
        "single": [Posting(account, -100)],
        "none": [],
        "unsaved-account": [
            Posting(CreditAccount(kind=CreditAccount.Kind.ORGANISATION, balance=0), -100),
            Posting(usage(), 100),
        ],
        "grant-of-another-account": [Posting(account, -100, other_grant), Posting(usage(), 100)],
        "credit-into-another-accounts-grant": [
            Posting(adjustments(), -100),
            Posting(account, 100, other_grant),
        ],
        "credit-without-a-grant": [Posting(adjustments(), -100), Posting(account, 100)],
        "grant-on-a-system-account": [Posting(account, -100), Posting(usage(), 100, grant)],
    }[case]


@pytest.mark.parametrize(
    "case",
    [
        "unbalanced",
        "single",
        "none",
        "unsaved-account",
        "grant-of-another-account",
        "credit-into-another-accounts-grant",
        "credit-without-a-grant",
        "grant-on-a-system-account",
    ],
)
def test_ledger_post_refuses_malformed_postings_and_writes_nothing(case):
    # given two funded accounts
    account, other = org_account(), org_account()
    grant, other_grant = lot(account, 1000), lot(other, 1000)
    postings = _postings_for(case, account, grant, other, other_grant)
    before = books()

    # when the postings cannot form a valid transaction
    with pytest.raises(LedgerError):
        ledger_post(
            idempotency_key="malformed", kind=LedgerTransaction.Kind.ADJUSTMENT, postings=postings
        )

    # then nothing is written
    assert books() == before


@pytest.mark.parametrize("kind", ["organisation", "system"])
def test_ledger_post_refuses_an_account_that_does_not_exist_and_writes_nothing(kind):
    # given an account object whose row does not exist (deleted, or from another database)
    account = org_account()
    lot(account, 1000)
    ghost = CreditAccount(
        pk=987_654_321,
        kind=kind,
        balance=0 if kind == "organisation" else None,
        system_code="ghost" if kind == "system" else None,
    )
    before = books()

    # when it is posted to
    with pytest.raises(LedgerError), transaction.atomic():
        ledger_post(
            idempotency_key="to-a-ghost",
            kind=LedgerTransaction.Kind.ADJUSTMENT,
            postings=[Posting(account, -100), Posting(ghost, 100)]
            if kind == "system"
            else [Posting(ghost, -100), Posting(usage(), 100)],
        )

    # then it is refused as a malformed posting, and nothing is written
    assert books() == before


@pytest.mark.parametrize(
    "key", ["", "k" * 201, None, 42], ids=["empty", "201-chars", "none", "not-a-string"]
)
def test_ledger_post_refuses_a_bad_idempotency_key_and_writes_nothing(key):
    # given a funded account
    account = org_account()
    lot(account, 1000)
    before = books()

    # when the key is missing, too long or not text
    with pytest.raises(LedgerError):
        ledger_post(
            idempotency_key=key,
            kind=LedgerTransaction.Kind.USAGE,
            postings=[Posting(account, -100), Posting(usage(), 100)],
        )

    # then nothing is written
    assert books() == before


def test_a_key_of_exactly_200_characters_is_accepted():
    # given a funded account
    account = org_account()
    lot(account, 1000)

    # when a key of the maximum length is used
    txn = charge(account, 100, "k" * 200)

    # then it is stored whole
    assert LedgerTransaction.objects.get(pk=txn.pk).idempotency_key == "k" * 200


@pytest.mark.parametrize("kind", ["bonus", "", "USAGE", None])
def test_ledger_post_refuses_an_unknown_kind_and_writes_nothing(kind):
    # given a funded account
    account = org_account()
    lot(account, 1000)
    before = books()

    # when the kind is not one of the ledger's
    with pytest.raises(LedgerError):
        ledger_post(
            idempotency_key="unknown-kind",
            kind=kind,
            postings=[Posting(account, -100), Posting(usage(), 100)],
        )

    # then nothing is written
    assert books() == before


def test_a_debit_from_a_named_lot_cannot_exceed_what_it_holds():
    # given two lots, the named one holding 100
    account = org_account()
    small = lot(account, 100, days=5)
    lot(account, 1000, days=10)
    before = books()

    # when 101 is taken from the named lot
    with pytest.raises(InsufficientCredits):
        ledger_post(
            idempotency_key="from-small",
            kind=LedgerTransaction.Kind.ADJUSTMENT,
            postings=[Posting(account, -101, small), Posting(adjustments(), 101)],
        )

    # then nothing is written, even though the account as a whole could pay
    assert books() == before


# --- Append-only, in code and in the database -----------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE credits_ledgerentry SET amount = amount * 2",
        "UPDATE credits_ledgertransaction SET description = 'forged'",
    ],
)
def test_the_database_refuses_updates_to_the_ledger_even_from_raw_sql(sql):
    # given a posted grant
    lot(org_account(), 1000)
    before = books()
    descriptions = list(LedgerTransaction.objects.values_list("description", flat=True))

    # when a hand-written UPDATE tries to rewrite it
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)

    # then history is unchanged
    assert books() == before
    assert list(LedgerTransaction.objects.values_list("description", flat=True)) == descriptions


def test_queryset_updates_to_the_ledger_are_refused_by_the_database():
    # given a posted grant
    lot(org_account(), 1000)
    before = books()

    # when the ORM bypasses save() with a bulk update
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.update(amount=1)
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerTransaction.objects.update(kind=LedgerTransaction.Kind.USAGE)

    # then history is unchanged
    assert books() == before


@pytest.mark.parametrize(
    "sql", ["DELETE FROM credits_ledgerentry", "DELETE FROM credits_ledgertransaction"]
)
def test_postgresql_also_refuses_deletes_from_the_ledger(sql):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps DELETE for the test flush; `make test` runs this on PostgreSQL")
    # given a posted grant
    lot(org_account(), 1000)
    before = books()

    # when a hand-written DELETE tries to remove it
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)

    # then history is unchanged
    assert books() == before


def test_code_cannot_change_or_delete_ledger_rows():
    # given a posted grant
    lot(org_account(), 1000, key="grant-1")
    txn = LedgerTransaction.objects.get(idempotency_key="grant-1")
    entry = txn.entries.first()
    before = books()

    # when code tries to save changes to, or delete, a transaction or an entry
    entry.amount = 5
    txn.description = "forged"
    for attempt in (entry.save, entry.delete, txn.save, txn.delete):
        with pytest.raises(AppendOnlyError):
            attempt()

    # then nothing changed
    assert books() == before
