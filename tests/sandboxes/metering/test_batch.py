"""The tick as it runs in production: outside any transaction, on PostgreSQL, where all of a
tick's charges are one statement (credits_post_usage)."""

import datetime as dt
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.credits.charge_metadata import ChargeMetadata
from portal.credits.models import CreditAccount, LedgerEntry, LedgerTransaction
from portal.credits.services import UsageDue, account_for_student, usage_charge_batch
from sandboxes.metering import services
from sandboxes.metering.charging import owed
from sandboxes.metering.models import SandboxRun, UsageCharge
from tests.sandboxes.launcher.helpers import funded_founder, funded_student, gpus

from .helpers import running

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the batch statement: PostgreSQL"),
]


def books_exact():
    for txn in LedgerTransaction.objects.all():
        assert sum(txn.entries.values_list("amount", flat=True)) == 0
    for account in CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM):
        entries = LedgerEntry.objects.filter(account=account).values_list("amount", flat=True)
        assert account.balance == sum(entries) >= 0


def test_a_batch_charges_replays_and_takes_what_is_left(enqueued):
    rich = account_for_student(funded_student(hours=10))
    poor = account_for_student(funded_student(hours=0.01))  # 36 credit-seconds
    dues = [
        UsageDue(rich.pk, 10, "usage:test:a", ChargeMetadata(sandbox="a")),
        UsageDue(poor.pk, 30, "usage:test:b", ChargeMetadata(sandbox="b")),
        UsageDue(poor.pk, 30, "usage:test:c", ChargeMetadata(sandbox="c")),  # only 6 left
        UsageDue(poor.pk, 30, "usage:test:d", ChargeMetadata(sandbox="d")),  # nothing left
    ]
    results, _warnings = usage_charge_batch(dues)
    assert [r.charged for r in results] == [10, 30, 6, 0]
    assert results[3].transaction_id is None
    short = LedgerTransaction.objects.get(idempotency_key="usage:test:c")
    assert short.metadata == {"sandbox": "c", "unpaid": 24}
    # The same batch again: nothing new, and each says what it charged the first time.
    again, _ = usage_charge_batch(dues[:3])
    assert [(r.charged, r.transaction_id) for r in again] == [
        (r.charged, r.transaction_id) for r in results[:3]
    ]
    assert LedgerTransaction.objects.filter(kind="usage").count() == 3
    books_exact()


def test_two_ticks_at_once_charge_every_interval_once(enqueued):
    gpus(4)
    runs = [running(funded_founder(hours=10), "gpu-1", ago=125)[1] for _ in range(3)]
    now = timezone.now()
    results, errors = [], []

    def tick():
        try:
            results.append(services.tick(now=now, wait=True))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.charged for r in results) == sum(
        owed(rate_millicredits=1000, started_at=r.started_at, until=r.started_at)  # 0
        + SandboxRun.objects.get(pk=r.pk).charged_credit_seconds
        for r in runs
    )
    for run in runs:
        run.refresh_from_db()
        expected = owed(rate_millicredits=1000, started_at=run.started_at, until=run.charged_until)
        assert 110 < expected <= 125
        ledger = -sum(
            LedgerEntry.objects.filter(
                transaction__metadata__run=str(run.public_id), account=run.account
            ).values_list("amount", flat=True)
        )
        assert ledger == expected == run.charged_credit_seconds
    assert UsageCharge.objects.count() == LedgerTransaction.objects.filter(kind="usage").count()
    assert services.reconcile()["drift"] == []
    books_exact()


def queries_of_a_tick(now) -> int:
    with CaptureQueriesContext(connection) as queries:
        services.tick(now=now)
    return len(queries)


def test_a_tick_makes_the_same_number_of_queries_for_2_or_10_sandboxes(enqueued):
    gpus(12)
    for _ in range(2):
        running(funded_founder(hours=10), "gpu-1", ago=65)
    now = timezone.now()
    services.tick(now=now)  # the first tick of a process also finds the usage account once
    few = queries_of_a_tick(now + dt.timedelta(seconds=10))
    for _ in range(8):
        running(funded_founder(hours=10), "gpu-1", ago=65)
    many = queries_of_a_tick(now + dt.timedelta(seconds=20))
    assert UsageCharge.objects.filter(interval_start__gte=now).count() >= 10
    assert few == many
