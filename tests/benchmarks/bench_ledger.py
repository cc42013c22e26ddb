"""Ledger throughput on PostgreSQL: `make bench` (not a test: pytest collects only test_*.py).

Measures, with BENCH_WORKERS processes (default 8), BENCH_ROUNDS times (default 3) in turn, for
BENCH_SECONDS each (default 4), and takes the median of each figure's rounds (interleaving the
rounds keeps a noisy neighbour on the shared machine from landing on one figure only):

  baseline          a plain single-row F() update of a counter through the ORM, in autocommit
  ledger_hot        usage_charge debits on ONE organisation account (all workers on one row lock)
  ledger_100        usage_charge debits spread over 100 organisation accounts

and prints

  BENCH ledger_hot_account: <debits/s> debits/s (baseline <updates/s> updates/s, ratio <r>)
  BENCH ledger_100_accounts: <debits/s> debits/s (baseline <hot debits/s> debits/s, ratio <r>)

with the targets (hot/baseline >= 0.5, spread/hot >= 1.5), a profile of one debit (statements
and their times), then checks the books (every transaction sums to zero, cached balances equal
the entries). Exit status 1 when the books are wrong; 2 when BENCH_STRICT=1 and a target is
missed.

Why 8 workers on our 2 cores: a hot account is one that more posters want at once than its row
lock lets through. With 4 workers (two per core) the lock is often free, every run is bound by
CPU alone, and spreading the same work over 100 accounts cannot gain much (1.25 to 1.48 times
the hot account, measured); with 8 the hot account's queue is real, which is what the spread
figure is compared against. Both figures and the baseline always run with the same workers.

It creates and drops its own database (BENCH_DATABASE, default portal_bench) on the PostgreSQL
at BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432).
"""

import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_DATABASE", "portal_bench")
WORKERS = int(os.environ.get("BENCH_WORKERS", "8"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP_SECONDS = float(os.environ.get("BENCH_WARMUP_SECONDS", "0.5"))
SPREAD_ACCOUNTS = 100
HOT_TARGET, SPREAD_TARGET = 0.5, 1.5
FUNDS = 10**15  # credit-seconds per lot: no debit in any run can empty it

os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.test"
os.environ["DATABASE_URL"] = f"{SERVER_URL}/{DATABASE}"


# --- The database of its own ----------------------------------------------------------------


def database_create() -> None:
    common.database_create(SERVER_URL, DATABASE)


def database_drop() -> None:
    common.database_drop(SERVER_URL, DATABASE)


# --- Fixtures -------------------------------------------------------------------------------


def accounts_fund(count: int) -> list[int]:
    """`count` organisation accounts, each with one lot far larger than any run can use."""
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from portal.credits.models import CreditGrant
    from portal.credits.services import account_for_organisation, grant_issue
    from tests.factories import OrganisationFactory

    pks = []
    for _ in range(count):
        account = account_for_organisation(OrganisationFactory())
        grant_issue(
            account=account,
            credit_seconds=FUNDS,
            rate_pkr_per_gpu_hour=Decimal("750.00"),
            expires_at=timezone.now() + dt.timedelta(days=365),
            source=CreditGrant.Source.APPLICATION,
            idempotency_key=f"bench-funds:{account.pk}",
        )
        pks.append(account.pk)
    return pks


def counter_create() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_counter (id integer PRIMARY KEY, n bigint NOT NULL)")
        cursor.execute("INSERT INTO bench_counter (id, n) VALUES (1, 0)")


# --- Workers --------------------------------------------------------------------------------


_counter_model = None


def _counter():
    """The baseline's table as an unmanaged model, so the baseline is what the issue names: a
    plain single-row F() update through the ORM (in autocommit, like usage_charge's call)."""
    global _counter_model
    if _counter_model is None:
        from django.db import models

        class BenchCounter(models.Model):  # noqa: DJ008 - a throwaway table for the baseline
            n = models.BigIntegerField()

            class Meta:
                app_label = "credits"
                managed = False
                db_table = "bench_counter"

        _counter_model = BenchCounter
    return _counter_model


def _op_counter(_worker: int, _n: int, _accounts) -> None:
    from django.db.models import F

    _counter().objects.filter(pk=1).update(n=F("n") + 1)


def _op_debit(worker: int, n: int, accounts) -> None:
    from portal.credits.services import usage_charge

    account = accounts[(worker + n * WORKERS) % len(accounts)]
    usage_charge(
        account=account,
        credit_seconds=1,
        idempotency_key=f"bench:{os.getpid()}:{worker}:{n}",
        metadata={"sandbox_name": "bench"},
    )


OPERATIONS = {"counter": _op_counter, "debit": _op_debit}


def _worker_main(operation: str, worker: int, account_pks, barrier, queue) -> None:
    from django.db import connection

    from portal.credits.models import CreditAccount

    try:
        by_pk = CreditAccount.objects.in_bulk(account_pks) if account_pks else {}
        accounts = [by_pk[pk] for pk in account_pks]
        op = OPERATIONS[operation]
        barrier.wait(timeout=60)
        start = time.monotonic()
        measure_from, until = start + WARMUP_SECONDS, start + WARMUP_SECONDS + SECONDS
        n = measured = 0
        while (now := time.monotonic()) < until:
            op(worker, n, accounts)
            n += 1
            if now >= measure_from:
                measured += 1
        queue.put(("ok", worker, measured, n))
    except Exception as exc:  # reported by the parent, which then fails
        queue.put(("error", worker, repr(exc), 0))
    finally:
        connection.close()


def run(operation: str, account_pks: list[int]) -> tuple[float, int]:
    """Throughput of `operation` over WORKERS forked processes: (ops/s, total ops incl. warm-up)."""
    from portal.core.db import connections_close_for_fork

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS)
    queue = context.Queue()
    connections_close_for_fork()  # no connection (nor pool) may be shared with a child
    processes = [
        context.Process(target=_worker_main, args=(operation, worker, account_pks, barrier, queue))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=WARMUP_SECONDS + SECONDS + 120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [r for r in results if r[0] != "ok"]
    if errors or any(p.exitcode != 0 for p in processes):
        raise SystemExit(f"BENCH {operation}: workers failed: {errors}")
    return sum(r[2] for r in results) / SECONDS, sum(r[3] for r in results)


# --- Profile of one debit -------------------------------------------------------------------


def profile(account_pk: int, samples: int = 300) -> int:
    """Statements per usage_charge (CaptureQueriesContext) and the mean time of each (timed
    around the driver call), on a quiet database: what one debit holds the row lock for."""
    from collections import defaultdict

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from portal.credits.models import CreditAccount
    from portal.credits.services import usage_charge

    account = CreditAccount.objects.get(pk=account_pk)
    times: dict[str, list[float]] = defaultdict(list)
    commits: list[float] = []

    locked_since: list[float] = []
    lock_holds: list[float] = []

    def timed_execute(execute, sql, params, many, context):
        started = time.perf_counter()
        if sql.startswith('UPDATE "credits_creditaccount"'):
            locked_since.append(started)  # the row lock on the account is taken here
        try:
            return execute(sql, params, many, context)
        finally:
            times[_label(sql)].append(time.perf_counter() - started)

    real_commit = connection._commit

    def timed_commit():
        started = time.perf_counter()
        try:
            return real_commit()
        finally:
            ended = time.perf_counter()
            commits.append(ended - started)
            if locked_since:
                lock_holds.append(ended - locked_since.pop())

    counts, walls = [], []
    connection._commit = timed_commit
    try:
        with connection.execute_wrapper(timed_execute):
            for n in range(samples):
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    usage_charge(
                        account=account,
                        credit_seconds=1,
                        idempotency_key=f"bench-profile:{n}",
                        metadata={},
                    )
                    walls.append(time.perf_counter() - started)
                counts.append(len(captured.captured_queries))
    finally:
        del connection._commit
    ms = 1000 / samples
    in_statements = sum(sum(v) for v in times.values()) * ms
    in_python = (sum(walls) - sum(commits)) * ms - in_statements
    say(
        f"BENCH profile: one usage_charge = {sum(counts) / samples:.1f} statements "
        "(BEGIN and COMMIT included), "
        f"{sum(walls) * ms:.3f} ms wall = {in_statements:.3f} ms statements "
        f"+ {sum(commits) * ms:.3f} ms COMMIT + {in_python:.3f} ms Python "
        f"(one worker, quiet database, mean of {samples})"
    )
    if lock_holds:  # the ORM path; on PostgreSQL the lock is taken inside one function call
        hold = 1000 * sum(lock_holds) / len(lock_holds)
        say(
            f"BENCH profile: the account's row lock is held {hold:.3f} ms per debit (UPDATE of "
            f"the balance to the end of COMMIT): at most {1000 / hold:.0f} debits/s on one account"
        )
    say(f"BENCH profile:   {1.0:4.1f} x {sum(commits) * ms:6.3f} ms  COMMIT")
    for label, values in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        say(
            f"BENCH profile:   {len(values) / samples:4.1f} x "
            f"{1000 * sum(values) / len(values):6.3f} ms  {label}"
        )
    return samples


def _label(sql: str) -> str:
    """A short, stable name for a statement: its verb and its table."""
    words = sql.replace('"', "").split()
    upper = [w.upper() for w in words]
    verb = upper[0]
    if verb in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
        return " ".join(upper[:2]) if verb != "SAVEPOINT" else verb
    if verb == "UPDATE":
        return f"UPDATE {words[1]} ({sql[sql.upper().find('SET') :][:40].strip()}...)"
    for marker in ("INTO", "FROM"):
        if marker in upper:
            table = words[upper.index(marker) + 1]
            suffix = " FOR UPDATE" if "FOR" in upper and "UPDATE" in upper else ""
            return f"{verb} {table}{suffix}"
    return verb


# --- The books after the run ----------------------------------------------------------------


def books_check(expected_usage: int) -> list[str]:
    from django.db import connection

    problems = common.ledger_problems()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM credits_ledgertransaction WHERE kind = 'usage'")
        (usage,) = cursor.fetchone()
    if usage != expected_usage:
        problems.append(f"{usage} usage transactions, but workers counted {expected_usage}")
    return problems


# --- Main -----------------------------------------------------------------------------------


def main() -> int:
    say(
        f"BENCH setup: database {DATABASE}, {WORKERS} workers, {ROUNDS} rounds of "
        f"{SECONDS:g} s per figure"
    )
    database_create()
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        counter_create()
        hot = accounts_fund(1)
        spread = accounts_fund(SPREAD_ACCOUNTS)

        rounds: dict[str, list[float]] = {"baseline": [], "hot": [], "spread": []}
        debits = 0
        for _ in range(ROUNDS):
            rate, _total = run("counter", [])
            rounds["baseline"].append(rate)
            for name, accounts in (("hot", hot), ("spread", spread)):
                rate, total = run("debit", accounts)
                rounds[name].append(rate)
                debits += total
        baseline, hot_rate, spread_rate = (
            statistics.median(rounds[name]) for name in ("baseline", "hot", "spread")
        )
        say(
            "BENCH rounds: "
            + "; ".join(
                f"{name} " + " ".join(f"{rate:.0f}" for rate in rates) + "/s"
                for name, rates in rounds.items()
            )
            + f" (medians below, {ROUNDS} rounds of {SECONDS:g} s)"
        )
        hot_ratio = hot_rate / baseline if baseline else 0.0
        spread_ratio = spread_rate / hot_rate if hot_rate else 0.0

        say(
            f"BENCH ledger_hot_account: {hot_rate:.1f} debits/s "
            f"(baseline {baseline:.1f} updates/s, ratio {hot_ratio:.2f})"
        )
        say(
            f"BENCH ledger_100_accounts: {spread_rate:.1f} debits/s "
            f"(baseline {hot_rate:.1f} debits/s, ratio {spread_ratio:.2f})"
        )
        hot_met, spread_met = hot_ratio >= HOT_TARGET, spread_ratio >= SPREAD_TARGET
        say(
            f"BENCH targets: hot/baseline >= {HOT_TARGET} {'MET' if hot_met else 'NOT MET'}; "
            f"100_accounts/hot >= {SPREAD_TARGET} {'MET' if spread_met else 'NOT MET'}; "
            f"workers={WORKERS} rounds={ROUNDS} seconds={SECONDS:g} cpus={os.cpu_count()}"
        )

        profiled = profile(hot[0])
        problems = books_check(expected_usage=debits + profiled)
        if problems:
            say("BENCH books: FAIL: " + "; ".join(problems))
            return 1
        say("BENCH books: OK (every transaction sums to zero; balances equal entries and lots)")
        strict = os.environ.get("BENCH_STRICT") == "1"
        return 2 if strict and not (hot_met and spread_met) else 0
    finally:
        from django.db import connections

        connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            database_drop()


if __name__ == "__main__":
    sys.exit(main())
