"""A batch of usage charges on PostgreSQL (credits_post_usage): the accounts that can pay for all
their items are posted set-based, the others one by one. The set-based batch must write exactly
what one by one writes (the same lots drawn in the same order, the same entries), fall back to
one by one when the books change under it, and keep every guarantee of the batch: each key
once, partial charges, the books balanced."""

import threading
import time

import pytest
from django.db import connection, transaction

from portal.credits.charge_metadata import ChargeMetadata
from portal.credits.models import AccountRollup, CreditGrant, LedgerEntry, LedgerTransaction
from portal.credits.services import InsufficientCredits, UsageDue, usage_charge_batch
from tests.portal.credits.helpers import (
    assert_books_consistent,
    balance_of,
    charge,
    lot,
    org_account,
    remaining_of,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="credits_post_usage: PostgreSQL"),
]


def dues(account, amounts, prefix):
    return [
        UsageDue(account.pk, amount, f"{prefix}:{k}", ChargeMetadata(sandbox=f"s{k}", due=amount))
        for k, amount in enumerate(amounts)
    ]


def legs(account) -> list[tuple[str, int, int]]:
    """(key, lot's expiry rank, amount) of every holder leg on the account, in entry order."""
    lots = list(CreditGrant.objects.filter(account=account).order_by("expires_at", "pk"))
    rank = {grant.pk: k for k, grant in enumerate(lots)}
    return [
        (key.split(":", 1)[1], rank[grant_id], amount)
        for key, grant_id, amount in LedgerEntry.objects.filter(account=account)
        .order_by("pk")
        .values_list("transaction__idempotency_key", "grant_id", "amount")
    ]


def rollups(account) -> list[tuple]:
    return list(
        AccountRollup.objects.filter(account=account)
        .order_by("period", "starts", "kind", "rate_pkr_per_gpu_hour")
        .values_list("period", "starts", "kind", "rate_pkr_per_gpu_hour", "amount", "entries")
    )


def two_accounts_with_lots():
    """Two organisation accounts with the same three lots (expiring in 5, 10 and 20 days)."""
    accounts = [org_account(), org_account()]
    for account in accounts:
        lot(account, 1000, days=20)
        lot(account, 70, days=5)
        lot(account, 50, days=10)
    return accounts


def test_a_set_based_batch_draws_exactly_what_one_by_one_draws():
    # given two accounts with the same lots
    batched, single = two_accounts_with_lots()
    amounts = [30, 30, 45, 5, 400, 12]  # the third item spans two lots, the fifth the last two

    # when one is charged in one batch (set-based) and the other charge by charge through the
    # ORM's path (inside a transaction, the batch posts one by one through ledger_post)
    results, _warnings = usage_charge_batch(dues(batched, amounts, "b"))
    with transaction.atomic():
        one_by_one, _warnings = usage_charge_batch(dues(single, amounts, "o"))

    # then both charged everything, from the same lots, leg for leg
    assert [r.charged for r in results] == amounts == [r.charged for r in one_by_one]
    assert all(r.transaction_id and not r.replayed for r in results)
    assert legs(batched)[3:] == legs(single)[3:]  # past the three grants' legs
    assert [leg[1:] for leg in legs(batched)[3:]] == [
        (0, -30), (0, -30), (0, -10), (1, -35), (1, -5), (1, -10), (2, -390), (2, -12),
    ]  # fmt: skip
    for rank in range(3):
        first = CreditGrant.objects.filter(account=batched).order_by("expires_at", "pk")[rank]
        second = CreditGrant.objects.filter(account=single).order_by("expires_at", "pk")[rank]
        assert remaining_of(first) == remaining_of(second)
    assert balance_of(batched) == balance_of(single) == 1120 - sum(amounts)
    # and the same roll-ups: the usage of each day and month, per lot rate
    assert rollups(batched) == rollups(single) != []
    # each transaction is the usage of its own item, with its own metadata
    for due, result in zip(dues(batched, amounts, "b"), results, strict=True):
        txn = LedgerTransaction.objects.get(pk=result.transaction_id)
        assert (txn.idempotency_key, txn.kind) == (due.idempotency_key, "usage")
        assert txn.metadata == due.metadata.to_json()
        assert sum(txn.entries.values_list("amount", flat=True)) == 0
    # and the lots drawn come back as they stand, for the low-balance warnings
    assert {lot.grant_id for lot in results[4].drawn} == set(
        CreditGrant.objects.filter(account=batched, expires_at__gt=results[4].posted_at)
        .exclude(amount=70)
        .values_list("pk", flat=True)
    )
    assert_books_consistent()


def test_a_mixed_batch_posts_the_covered_set_based_and_the_rest_one_by_one():
    # given a rich account, a poor one (100), and a key posted before
    rich, poor = org_account(), org_account()
    lot(rich, 10_000)
    lot(poor, 100)
    charge(rich, 7, "mixed:before")
    batch = [
        UsageDue(rich.pk, 10, "mixed:r1", ChargeMetadata(sandbox="r1")),
        UsageDue(rich.pk, 7, "mixed:before", ChargeMetadata(sandbox="r0")),  # a replay
        UsageDue(rich.pk, 20, "mixed:r2", ChargeMetadata(sandbox="r2")),
        UsageDue(poor.pk, 60, "mixed:p1", ChargeMetadata(sandbox="p1")),
        UsageDue(poor.pk, 60, "mixed:p2", ChargeMetadata(sandbox="p2")),  # 40 left
        UsageDue(poor.pk, 60, "mixed:p3", ChargeMetadata(sandbox="p3")),  # nothing left
    ]

    # when the batch is charged, then charged again (a retried tick)
    first, _ = usage_charge_batch(batch)
    again, _ = usage_charge_batch(batch)

    # then the rich account paid all, the poor one what it had, the replay nothing new
    assert [r.charged for r in first] == [10, 7, 20, 60, 40, 0]
    assert [r.replayed for r in first] == [False, True, False, False, False, False]
    assert first[5].transaction_id is None
    short = LedgerTransaction.objects.get(idempotency_key="mixed:p2")
    assert short.metadata == {"sandbox": "p2", "unpaid": 20}
    assert balance_of(rich) == 10_000 - 37
    assert balance_of(poor) == 0
    # and the retry posted nothing twice, and says what each key charged
    assert [(r.charged, r.transaction_id) for r in again[:5]] == [
        (r.charged, r.transaction_id) for r in first[:5]
    ]
    assert all(r.replayed for r in again[:5])
    assert LedgerTransaction.objects.filter(kind="usage").count() == 5  # p3 has none
    assert_books_consistent()


def test_a_key_given_twice_in_one_batch_is_posted_once():
    account = org_account()
    lot(account, 1000)
    batch = dues(account, [10, 10], "twice")
    batch[1] = batch[0]

    results, _ = usage_charge_batch(batch)

    assert results[0].transaction_id == results[1].transaction_id
    assert sorted(r.replayed for r in results) == [False, True]
    assert balance_of(account) == 990
    assert_books_consistent()


def test_a_batch_to_be_paid_in_full_on_a_covered_account_posts_and_on_a_short_one_writes_nothing():
    rich, poor = org_account(), org_account()
    lot(rich, 1000)
    lot(poor, 10)

    results, _ = usage_charge_batch(dues(rich, [400, 600], "full"), partial=False)
    assert [r.charged for r in results] == [400, 600]
    assert balance_of(rich) == 0

    with pytest.raises(InsufficientCredits):
        usage_charge_batch(dues(poor, [5], "full-p") + dues(rich, [1], "full-r"), partial=False)
    assert not LedgerTransaction.objects.filter(idempotency_key__startswith="full-").exists()
    assert balance_of(poor) == 10
    assert_books_consistent()


def test_a_debit_that_commits_while_the_batch_waits_for_the_lock_sends_it_one_by_one():
    # given an account with 100, and another writer holding its lock after taking 70 of it
    account = org_account()
    lot(account, 100)
    taken, release = threading.Event(), threading.Event()
    errors, results = [], []

    def other_writer():
        try:
            with transaction.atomic():
                with transaction.atomic():  # posts one by one, inside this transaction
                    usage_charge_batch(dues(account, [70], "other"))
                taken.set()
                release.wait(timeout=30)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def tick():
        try:
            results.extend(usage_charge_batch(dues(account, [20, 20], "tick"))[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=other_writer)
    writer.start()
    assert taken.wait(timeout=30)
    # when the batch reads 100 (the other's 70 is not committed), and waits for the lock
    batch = threading.Thread(target=tick)
    batch.start()
    deadline = time.monotonic() + 10
    while not _waiting_for_a_lock() and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    writer.join()
    batch.join()

    # then it found 30 where it counted on 100, and charged one by one what was left
    assert errors == []
    assert [r.charged for r in results] == [20, 10]
    assert LedgerTransaction.objects.get(idempotency_key="tick:1").metadata["unpaid"] == 10
    assert balance_of(account) == 0
    assert_books_consistent()


def _waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            ["%credits_post_usage%"],
        )
        return cursor.fetchone()[0] > 0
