"""The ledger under real concurrency, on PostgreSQL: many threads in several processes at once.

Each test commits for real (transaction=True), so that the workers, which have connections of
their own, see each other's writes and take real row locks.
"""

import multiprocessing
import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, connections

from portal.audit.models import AuditEvent
from portal.core.db import connections_close_for_fork
from portal.core.exceptions import ApplicationError
from portal.credits.models import CreditAccount, CreditGrant, LedgerTransaction
from portal.credits.services import (
    InsufficientCredits,
    grant_revoke,
    grants_expire_due,
    system_account,
    usage_charge,
)
from tests.portal.credits.helpers import (
    assert_books_consistent,
    balance_of,
    entries_sum,
    lapse,
    lot,
    org_account,
)

pytestmark = pytest.mark.django_db(transaction=True)

JOIN_TIMEOUT_S = 120  # far above a healthy run (a few seconds): only a deadlock or a hang hits it


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("Row locks and concurrent writers need PostgreSQL; `make test` runs this")


def _charge_all(account_pk: int, keys: list[str], seconds: int, barrier, results: list) -> None:
    """One worker thread: wait for everyone, then post its debits one after the other."""
    try:
        account = CreditAccount.objects.get(pk=account_pk)  # connect before the start line
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        for key in keys:
            try:
                txn = usage_charge(
                    account=account,
                    credit_seconds=seconds,
                    idempotency_key=key,
                    metadata={"sandbox_name": threading.current_thread().name},
                )
            except InsufficientCredits:
                results.append(("insufficient", key))
            else:
                results.append(("ok", key, txn.pk))
    except Exception as exc:  # every other outcome fails the test, with its repr
        results.append(("error", repr(exc)))
    finally:
        connection.close()


def _threads_run(target, args_list: list[tuple]) -> list[str]:
    """Start one thread per args tuple, join them with a bound; the names of any still alive."""
    threads = [
        threading.Thread(target=target, args=args, name=f"worker-{n}", daemon=True)
        for n, args in enumerate(args_list)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    return [thread.name for thread in threads if thread.is_alive()]


def _process_main(account_pk, key_chunks, seconds, barrier, queue) -> None:
    """A forked worker process: several threads, each with its own connection."""
    results: list = []
    hung = _threads_run(
        _charge_all, [(account_pk, keys, seconds, barrier, results) for keys in key_chunks]
    )
    results.extend(("error", f"thread {name} did not finish (deadlock?)") for name in hung)
    queue.put(results)


class _BalanceWatch:
    """Reads the cached balance over and over while the workers run: it never dips below 0."""

    def __init__(self, account_pk: int):
        self.account_pk = account_pk
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.seen.append(
                    CreditAccount.objects.values_list("balance", flat=True).get(pk=self.account_pk)
                )
                self._stop.wait(0.002)
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=JOIN_TIMEOUT_S)


def test_concurrent_debits_from_threads_and_processes_never_overdraw():
    # given an account funded for exactly K debits, in two lots so that some debits span both
    debit, fundable = 1000, 37
    processes, threads_per_process, debits = 4, 5, 200
    account = org_account()
    lot(account, 20_500, days=10)
    lot(account, fundable * debit - 20_500, days=30)
    assert balance_of(account) == fundable * debit
    keys = [f"usage:concurrent:{uuid.uuid4()}" for _ in range(debits)]
    workers = processes * threads_per_process
    chunks = [keys[n::workers] for n in range(workers)]

    # when 200 debits are posted at once by 4 processes of 5 threads each
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers)
    queue = context.Queue()
    connections_close_for_fork()  # no connection (nor pool) may be shared with a child
    children = [
        context.Process(
            target=_process_main,
            args=(
                account.pk,
                chunks[p * threads_per_process : (p + 1) * threads_per_process],
                debit,
                barrier,
                queue,
            ),
            daemon=True,
        )
        for p in range(processes)
    ]
    for child in children:
        child.start()
    results = []
    try:
        # the watch starts after the forks: no child inherits its connection
        with _BalanceWatch(account.pk) as watch:
            for _ in children:
                results.extend(queue.get(timeout=JOIN_TIMEOUT_S))
            for child in children:
                child.join(timeout=JOIN_TIMEOUT_S)
        hung = [child.pid for child in children if child.is_alive()]
    finally:
        for child in children:
            if child.is_alive():
                child.kill()

    # then exactly K succeed and every other one is refused for lack of credits
    assert hung == [], "worker processes did not finish (deadlock?)"
    assert [r[1] for r in results if r[0] == "error"] == []
    outcomes = Counter(r[0] for r in results)
    assert outcomes == {"ok": fundable, "insufficient": debits - fundable}
    assert all(child.exitcode == 0 for child in children)
    # and the balance is exactly zero, and was never seen below zero
    assert balance_of(account) == 0
    assert watch.seen
    assert min(watch.seen) >= 0
    # and the books hold one usage transaction per successful debit, and nothing else
    succeeded = {r[1] for r in results if r[0] == "ok"}
    usage = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.USAGE)
    assert set(usage.values_list("idempotency_key", flat=True)) == succeeded
    assert entries_sum(account=account, transaction__kind=LedgerTransaction.Kind.USAGE) == -(
        fundable * debit
    )
    assert entries_sum(account=system_account(CreditAccount.System.USAGE)) == fundable * debit
    assert not CreditGrant.objects.filter(account=account, remaining__gt=0).exists()
    assert_books_consistent()


def test_one_key_posted_fifty_times_at_once_moves_the_balance_once():
    # given a funded account
    account = org_account()
    lot(account, 10_000)
    concurrency = 50
    barrier = threading.Barrier(concurrency)
    results: list = []

    # when 50 threads post the same charge under the same key at the same moment
    connections.close_all()
    hung = _threads_run(
        _charge_all,
        [(account.pk, ["usage:job-42"], 700, barrier, results) for _ in range(concurrency)],
    )

    # then every one of them gets the one transaction back, and the balance moved once
    assert hung == []
    assert [r[1] for r in results if r[0] != "ok"] == []
    assert len(results) == concurrency
    txn = LedgerTransaction.objects.get(idempotency_key="usage:job-42")
    assert {r[2] for r in results} == {txn.pk}
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.USAGE).count() == 1
    assert txn.entries.count() == 2
    assert balance_of(account) == 9_300
    assert_books_consistent()


def test_the_expiry_job_run_by_many_workers_at_once_expires_each_lot_once():
    # given five lots past their expiry and one open lot
    account = org_account()
    due = [lot(account, 1000 * (n + 1), days=1) for n in range(5)]
    open_lot = lot(account, 500, days=30)
    for grant in due:
        lapse(grant)
    expired_account = system_account(CreditAccount.System.EXPIRED)
    barrier = threading.Barrier(10)
    outcomes: list = []

    def run_job():
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            outcomes.append(("ok", grants_expire_due()))
        except Exception as exc:  # any exception fails the test, with its repr
            outcomes.append(("error", repr(exc)))
        finally:
            connection.close()

    # when ten workers run the expiry job at the same moment
    connections.close_all()
    hung = _threads_run(run_job, [() for _ in range(10)])

    # then each lot's remainder moved to the expired account exactly once
    assert hung == []
    assert [o for o in outcomes if o[0] != "ok"] == []
    assert entries_sum(account=expired_account) == 15_000
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.EXPIRY).count() == 5
    assert balance_of(account) == 500
    assert CreditGrant.objects.get(pk=open_lot.pk).remaining == 500
    assert not CreditGrant.objects.filter(pk__in=[g.pk for g in due], remaining__gt=0).exists()
    assert_books_consistent()


def test_revoking_one_lot_from_many_requests_at_once_revokes_and_audits_once():
    # given a lot of 1000 and another of 500 on one account
    account = org_account()
    grant = lot(account, 1000)
    lot(account, 500, days=60)
    barrier = threading.Barrier(8)
    outcomes: list = []

    def revoke():
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            outcomes.append(("ok", grant_revoke(grant=grant, reason="Misuse", acting_user=None)))
        except ApplicationError as exc:
            outcomes.append(("refused", exc.message))
        except Exception as exc:  # any other exception fails the test, with its repr
            outcomes.append(("error", repr(exc)))
        finally:
            connection.close()

    # when eight requests revoke it at the same moment (a double click, two managers)
    connections.close_all()
    hung = _threads_run(revoke, [() for _ in range(8)])

    # then one revocation happens: one caller is told 1000 were revoked, the others are refused
    assert hung == []
    assert [o for o in outcomes if o[0] == "error"] == []
    assert sorted(o[0] for o in outcomes) == ["ok"] + ["refused"] * 7
    assert [o[1] for o in outcomes if o[0] == "ok"] == [1000]
    # and the books and the audit log each record it once
    key = f"grant-revocation:{grant.public_id}"
    assert LedgerTransaction.objects.filter(idempotency_key=key).count() == 1
    assert AuditEvent.objects.filter(action="credits.grant_revoked").count() == 1
    assert balance_of(account) == 500
    assert_books_consistent()
