"""Faults, with a real Celery worker (and real beat schedulers) on the test database and Redis:
a worker killed in the middle of a tick, a worker that was away for five minutes, two beats.
Every interval must be charged exactly once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from portal.celery import app as celery_app
from portal.credits.models import LedgerEntry, LedgerTransaction
from portal.credits.services import account_for_student
from sandboxes.launcher.models import Sandbox
from sandboxes.metering import tasks
from sandboxes.metering.charging import owed
from sandboxes.metering.models import SandboxRun, UsageCharge
from tests.factories import StudentProfileFactory
from tests.portal.credits.helpers import lot
from tests.sandboxes.e2e.conftest import celery_beat, celery_worker
from tests.sandboxes.launcher.helpers import image, profile

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="real worker: PostgreSQL"),
]
QUIET = {  # the other periodic tasks stay out of the way of these tests
    "SANDBOX_RECONCILE_INTERVAL": "86400",
    "SANDBOX_GPU_INVENTORY_INTERVAL": "86400",
    "CREDITS_EXPIRY_INTERVAL_SECONDS": "86400",
    "METERING_RECONCILE_INTERVAL": "86400",
    "LLM_CHARGE_INTERVAL": "86400",
    "LLM_HEALTH_INTERVAL": "86400",
    "LLM_RECONCILE_INTERVAL": "86400",
    "DOCKER_URL": "unix:///nonexistent/docker.sock",
}


@pytest.fixture
def real_celery():
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = eager


def runs_backdated(count: int, seconds: float, *, interval: int = 10) -> list[SandboxRun]:
    """`count` students, each with a sandbox that has been running for `seconds` without a single
    tick: exactly the state a worker that was away leaves behind. (CPU sandboxes charged at one
    GPU's rate, so that there are no devices to hand out and every interval has a charge.)"""
    img, prof = image(), profile("cpu-small")
    started = timezone.now() - dt.timedelta(seconds=seconds)
    runs = []
    for n in range(count):
        student = StudentProfileFactory().user
        account = account_for_student(student)
        lot(account, 36_000)
        sandbox = Sandbox.objects.create(
            user=student,
            account=account,
            image=img,
            profile=prof,
            server_name=f"sb-fault{n:05d}",
            status=Sandbox.Status.RUNNING,
            running_at=started,
        )
        runs.append(
            SandboxRun(
                sandbox=sandbox,
                account=account,
                rate_millicredits=1000,  # one GPU's rate: a charge every interval
                interval_seconds=interval,
                started_at=started,
                charged_until=started,
            )
        )
    return SandboxRun.objects.bulk_create(runs)


def assert_each_interval_charged_once(runs: list[SandboxRun]) -> None:
    ids = [r.pk for r in runs]
    assert not UsageCharge.objects.filter(run_id__in=ids, charged__isnull=True).exists()
    keys = UsageCharge.objects.filter(run_id__in=ids).values_list("idempotency_key", flat=True)
    usage = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.USAGE)
    assert usage.filter(idempotency_key__in=list(keys)).count() == len(keys) > 0
    duplicated = usage.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1)
    assert not duplicated.exists()
    for run in SandboxRun.objects.filter(pk__in=ids).select_related("account"):
        expected = owed(
            rate_millicredits=run.rate_millicredits,
            started_at=run.started_at,
            until=run.charged_until,
        )
        ledger = LedgerEntry.objects.filter(
            account=run.account, transaction__metadata__run=str(run.public_id)
        ).aggregate(total=Sum("amount"))["total"]
        assert -(ledger or 0) == expected == run.charged_credit_seconds
        run.account.refresh_from_db()
        assert run.account.balance == 36_000 - expected


def wait_for(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def charged_through(runs, at) -> bool:
    return not SandboxRun.objects.filter(pk__in=[r.pk for r in runs], charged_until__lt=at).exists()


def tick_in_flight() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            ["%FROM credits_post_usage(%"],
        )
        return cursor.fetchone()[0] > 0


def test_a_worker_killed_in_the_middle_of_a_tick_loses_and_doubles_nothing(real_celery, tmp_path):
    # Five minutes of 120 sandboxes at 10 s intervals: 3,600 charges in the first tick.
    runs = runs_backdated(120, 300)
    now = timezone.now()
    with celery_worker(QUIET, tmp_path / "worker-1.log") as worker:
        tasks.tick_task.delay()
        wait_for(tick_in_flight, timeout=60, what="the tick's ledger statement")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    # Killed mid-statement: the database rolled the batch back; the rows it had staged wait.
    assert UsageCharge.objects.filter(charged__isnull=True).exists()
    assert not LedgerTransaction.objects.filter(kind="usage").exists()
    with celery_worker(QUIET, tmp_path / "worker-2.log"):
        tasks.tick_task.delay()
        wait_for(
            lambda: charged_through(runs, now - dt.timedelta(seconds=10)),
            timeout=120,
            what="the next tick",
        )
        tasks.tick_task.delay()  # and once more, for good measure: nothing new for the same slots
        time.sleep(1)
    assert_each_interval_charged_once(runs)


def test_a_worker_away_for_five_minutes_charges_the_missed_intervals_once(real_celery, tmp_path):
    runs = runs_backdated(20, 300)
    now = timezone.now()
    with celery_worker(QUIET, tmp_path / "worker.log"):
        tasks.tick_task.delay()
        tasks.tick_task.delay()  # the backlog a beat would have queued: a second, concurrent tick
        wait_for(
            lambda: charged_through(runs, now - dt.timedelta(seconds=10)),
            timeout=120,
            what="the catch-up tick",
        )
    assert UsageCharge.objects.filter(run__in=runs).count() >= 20 * 29
    assert_each_interval_charged_once(runs)


def test_two_beat_schedulers_never_charge_an_interval_twice(real_celery, tmp_path, settings):
    env = {**QUIET, "METERING_INTERVAL": "1"}
    runs = runs_backdated(10, 5, interval=1)
    with (
        celery_worker(env, tmp_path / "worker.log"),
        celery_beat(env, tmp_path / "beat-a.log"),
        celery_beat(env, tmp_path / "beat-b.log"),
    ):

        def ticks_sent(name):
            return (tmp_path / f"{name}.log").read_text().count("Sending due task metering-tick")

        def slowest_charged_until():
            return min(
                SandboxRun.objects.filter(pk__in=[r.pk for r in runs]).values_list(
                    "charged_until", flat=True
                )
            )

        wait_for(
            lambda: ticks_sent("beat-a") >= 5 and ticks_sent("beat-b") >= 5,
            timeout=60,
            what="five ticks from each beat",
        )
        # and the ticks got through: every run charged past 5 s back-dated + 3 more intervals
        # (waited for, not slept on: a busy machine drops a late tick, as `expires` means it to)
        wait_for(
            lambda: slowest_charged_until() > runs[0].started_at + dt.timedelta(seconds=8),
            timeout=60,
            what="every run charged 8 s in",
        )
    assert_each_interval_charged_once(runs)
