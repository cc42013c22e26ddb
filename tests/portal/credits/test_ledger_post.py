"""The books: ledger_post, the one writer, and the services that post through it."""

import datetime as dt
import zoneinfo
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError
from portal.credits.models import (
    AppendOnlyError,
    CreditAccount,
    CreditGrant,
    CreditWarning,
    LedgerEntry,
    LedgerTransaction,
)
from portal.credits.services import (
    MAX_AMOUNT,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
    Posting,
    account_for_student,
    adjustment_post,
    grant_expire,
    grant_issue,
    grant_revoke,
    grants_expire_due,
    ledger_post,
    system_account,
    usage_charge,
    warnings_check,
)
from portal.onboarding.allowance import student_allowance_grant
from tests.factories import CohortFactory, StudentProfileFactory, UserFactory
from tests.portal.credits.helpers import (
    RATE,
    assert_books_consistent,
    balance_of,
    books,
    entries_sum,
    lapse,
    lot,
    org_account,
    remaining_of,
)

pytestmark = pytest.mark.django_db

KARACHI = zoneinfo.ZoneInfo("Asia/Karachi")


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


# --- Balanced transactions ------------------------------------------------------------------


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


# --- Student allowance ----------------------------------------------------------------------


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def test_a_student_gets_the_allowance_once_a_month(settings):
    # given a student in a cohort without an override
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 10
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    month = timezone.localdate()

    # when the allowance is granted twice in the month
    first = student_allowance_grant(user=student)
    before = books()
    again = student_allowance_grant(user=student, month=month.replace(day=1))

    # then one lot of 10 GPU-hours exists, under the student's key for the month
    assert again.pk == first.pk
    assert books() == before
    txn = LedgerTransaction.objects.get(
        idempotency_key=f"student-allowance:{student.pk}:{month:%Y-%m}"
    )
    assert txn.kind == LedgerTransaction.Kind.ALLOWANCE
    assert first.source == CreditGrant.Source.ALLOWANCE
    assert first.amount == 10 * 3600
    account = account_for_student(student)
    assert first.account == account
    assert account.kind == CreditAccount.Kind.STUDENT
    assert balance_of(account) == 10 * 3600
    assert_books_consistent()


def test_a_change_of_the_cohorts_allowance_mid_month_does_not_grant_again(settings):
    # given a student who got this month's allowance from a cohort giving 3 GPU-hours
    cohort = CohortFactory(monthly_allowance_gpu_hours=3)
    student = StudentProfileFactory(cohort=cohort).user
    first = student_allowance_grant(user=student)
    before = books()

    # when the cohort's allowance changes and the monthly job runs again
    cohort.monthly_allowance_gpu_hours = 5
    cohort.save(update_fields=["monthly_allowance_gpu_hours"])
    again = student_allowance_grant(user=student)

    # then this month's lot stays the one granted, and nothing is written
    assert again.pk == first.pk
    assert again.amount == 3 * 3600
    assert books() == before


def test_the_allowance_expires_at_the_end_of_the_month_in_karachi():
    # given a student
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    this_month = timezone.localdate()
    december = dt.date(this_month.year, 12, 1)

    # when this month's and December's allowances are granted
    current = student_allowance_grant(user=student)
    year_end = student_allowance_grant(user=student, month=december)

    # then each expires at midnight, Karachi time, when the next month starts
    following = _next_month(this_month)
    assert current.expires_at == dt.datetime(following.year, following.month, 1, tzinfo=KARACHI)
    assert year_end.expires_at == dt.datetime(this_month.year + 1, 1, 1, tzinfo=KARACHI)
    assert year_end.expires_at == dt.datetime(this_month.year, 12, 31, 19, 0, tzinfo=dt.UTC)


def test_next_months_allowance_is_a_new_lot():
    # given a student with this month's allowance
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    this_month = timezone.localdate()
    current = student_allowance_grant(user=student, month=this_month)

    # when next month's is granted
    following = student_allowance_grant(user=student, month=_next_month(this_month))

    # then it is another lot under another key
    assert following.pk != current.pk
    assert LedgerTransaction.objects.filter(
        idempotency_key=f"student-allowance:{student.pk}:{_next_month(this_month):%Y-%m}"
    ).exists()


def test_the_cohorts_allowance_wins_over_the_programme_default(settings):
    # given a cohort that gives 3 GPU-hours a month
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 10
    student = StudentProfileFactory(cohort=CohortFactory(monthly_allowance_gpu_hours=3)).user

    # when the allowance is granted
    grant = student_allowance_grant(user=student)

    # then it is the cohort's
    assert grant.amount == 3 * 3600


def test_a_cohort_with_no_allowance_gets_none():
    # given a cohort whose allowance is zero
    student = StudentProfileFactory(cohort=CohortFactory(monthly_allowance_gpu_hours=0)).user
    before = books()

    # when the allowance is granted
    grant = student_allowance_grant(user=student)

    # then there is none, and nothing is written
    assert grant is None
    assert books() == before


@pytest.mark.parametrize("case", ["not-a-student", "inactive", "month-over"])
def test_no_allowance_for_non_students_inactive_people_or_past_months(case):
    # given a person who should get nothing
    if case == "not-a-student":
        person = UserFactory()
    else:
        person = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    if case == "inactive":
        person.is_active = False
        person.save(update_fields=["is_active"])
    month = timezone.localdate()
    if case == "month-over":
        month = (month.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    before = books()

    # when the allowance is granted
    grant = student_allowance_grant(user=person, month=month)

    # then nothing is
    assert grant is None
    assert books() == before


# --- Low-balance warnings -------------------------------------------------------------------


def test_warnings_once_per_threshold_mailed_to_owners_and_admins_after_commit(
    organisation,
    owner,
    admin_member,
    member,
    mailoutbox,
    django_capture_on_commit_callbacks,
    settings,
):
    # given a lot of 1000 for an organisation with an owner, an admin and a member
    settings.CREDITS_WARNING_THRESHOLDS_PERCENT = [20, 5]
    account = org_account(organisation)
    grant = lot(account, 1000)

    # when usage leaves 21%, nothing is warned
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 790, "use-1")
    assert not CreditWarning.objects.exists()
    assert mailoutbox == []

    # when usage leaves exactly 20%, the 20% warning is recorded and mailed after commit
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        charge(account, 10, "use-2")
        assert mailoutbox == []  # not before the commit
    assert len(callbacks) == 2
    assert list(CreditWarning.objects.values_list("grant_id", "threshold_percent")) == [
        (grant.pk, 20)
    ]
    assert sorted(m.to[0] for m in mailoutbox) == sorted([owner.email, admin_member.email])
    assert all("20%" in m.subject for m in mailoutbox)

    # when usage continues above 5%, nothing more is sent
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 140, "use-3")
        charge(account, 1, "use-3b")
    assert CreditWarning.objects.count() == 1
    assert mailoutbox == []

    # when it falls to 5%, the 5% warning goes out, once
    assert remaining_of(grant) == 59
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 9, "use-4")
        charge(account, 1, "use-5")
    assert sorted(CreditWarning.objects.values_list("threshold_percent", flat=True)) == [5, 20]
    assert sorted(m.to[0] for m in mailoutbox) == sorted([owner.email, admin_member.email])
    assert all("5%" in m.subject for m in mailoutbox)


def test_falling_past_both_thresholds_at_once_records_both(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given a lot of 1000
    account = org_account(organisation)
    grant = lot(account, 1000)

    # when one charge uses 990
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 990, "use-1")

    # then both thresholds are recorded and the owner hears of each
    assert sorted(
        CreditWarning.objects.filter(grant=grant).values_list("threshold_percent", flat=True)
    ) == [5, 20]
    assert len(mailoutbox) == 2
    assert {m.to[0] for m in mailoutbox} == {owner.email}


def test_each_lot_is_warned_about_on_its_own(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given two lots of 100 and 1000
    account = org_account(organisation)
    small = lot(account, 100, days=5)
    big = lot(account, 1000, days=10)

    # when a charge empties the small lot and takes 10% of the big one
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 200, "use-1")

    # then only the small lot is warned about
    assert sorted(CreditWarning.objects.values_list("grant_id", "threshold_percent")) == [
        (small.pk, 5),
        (small.pk, 20),
    ]
    # and when the big lot falls below 20% it gets its own warning
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 750, "use-2")
    assert CreditWarning.objects.filter(grant=big, threshold_percent=20).exists()
    assert len(mailoutbox) == 3


def test_no_warning_mail_when_the_charge_is_rolled_back(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given a lot of 1000
    account = org_account(organisation)
    lot(account, 1000)
    before = books()

    def charge_then_fail():
        with transaction.atomic():
            charge(account, 1000, "use-1")
            raise RuntimeError("the caller failed after charging")

    # when a charge that crosses both thresholds is rolled back by its caller
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        charge_then_fail()

    # then no warning is recorded and no mail goes out
    assert books() == before
    assert mailoutbox == []


def test_a_student_is_warned_directly(mailoutbox, django_capture_on_commit_callbacks):
    # given a student with an allowance
    student = StudentProfileFactory(cohort=CohortFactory(monthly_allowance_gpu_hours=1)).user
    student_allowance_grant(user=student)
    account = account_for_student(student)

    # when the student uses 90% of it
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 3240, "use-1")

    # then the student is mailed
    assert [m.to for m in mailoutbox] == [[student.email]]


def test_warnings_check_is_idempotent(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given a lot below 20% whose warning was sent
    account = org_account(organisation)
    grant = lot(account, 1000)
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 850, "use-1")
    mailoutbox.clear()

    # when the check runs again
    with django_capture_on_commit_callbacks(execute=True):
        created = warnings_check(grant_ids=[grant.pk])

    # then nothing new is recorded or sent
    assert created == []
    assert CreditWarning.objects.count() == 1
    assert mailoutbox == []
