"""The metering tick on the portal's side: samples, charges, the stop countdown, reconciliation.
(The hub is not involved: sandboxes are marked running as the start task would.)"""

import datetime as dt

import pytest
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.credits.models import CreditAccount, LedgerEntry, LedgerTransaction
from portal.credits.services import account_for_student
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import deadlines
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from sandboxes.live import broadcast
from sandboxes.metering import services
from sandboxes.metering.charging import owed
from sandboxes.metering.models import (
    DeviceSample,
    SandboxRun,
    UsageCharge,
    UsageRollup,
    UsageSample,
)
from tests.portal.credits.helpers import lot
from tests.sandboxes.launcher.helpers import committed, funded_founder, funded_student, gpus

from .helpers import running

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Every message a tick broadcasts, per call of send_after_commit."""
    calls = []
    real = broadcast.send_after_commit

    def spy(messages):
        messages = list(messages)
        calls.append(messages)
        return real(messages)

    monkeypatch.setattr(broadcast, "send_after_commit", spy)
    return calls


def usage_of(run) -> int:
    return -sum(
        LedgerEntry.objects.filter(
            transaction__kind=LedgerTransaction.Kind.USAGE,
            transaction__metadata__run=str(run.public_id),
            account=run.account,
        ).values_list("amount", flat=True)
    )


def test_a_tick_charges_each_finished_interval_once_and_samples(settings, enqueued, sent):
    settings.METERING_INTERVAL = 10
    gpus(2)
    founder = funded_founder(hours=10)
    sandbox, run = running(founder, "gpu-1", ago=45)
    now = timezone.now()
    sent.clear()

    result = services.tick(now=now)
    run.refresh_from_db()
    expected = owed(rate_millicredits=1000, started_at=run.started_at, until=run.charged_until)
    assert 30 < expected <= 45
    assert usage_of(run) == expected == run.charged_credit_seconds == result.charged
    assert UsageCharge.objects.filter(run=run).count() == result.intervals >= 4
    assert UsageSample.objects.filter(sandbox=sandbox).count() == 1
    held = GpuAllocation.objects.get(sandbox=sandbox, released_at__isnull=True).device
    device_sample = DeviceSample.objects.get(device=held)
    assert device_sample.sandbox_id == sandbox.pk
    assert UsageRollup.objects.filter(sandbox_id=sandbox.pk, step="minute").exists()
    assert UsageRollup.objects.filter(sandbox_id=sandbox.pk, step="hour").exists()

    # One send for the whole tick: the owner's and the organisation's streams, the cluster.
    assert len(sent) == 1
    kinds = {(group.split(".")[1], m["type"]) for group, m in sent[0]}
    assert ("user", "usage.sample") in kinds
    assert ("org", "usage.sample") in kinds
    assert ("org", "credits.balance") in kinds
    assert ("cluster", "cluster.gpus") in kinds
    sample = next(m for g, m in sent[0] if m["type"] == "usage.sample")
    assert sample["sandbox"] == str(sandbox.public_id)
    assert sample["charged_credit_seconds"] == expected
    assert sample["simulated"] is True
    assert sample["gpus"][0]["uuid"] == held.uuid

    # The same tick again (a retry, a second beat): nothing more is charged or sampled.
    again = services.tick(now=now)
    assert again.charged == 0
    assert again.intervals == 0
    assert usage_of(run) == expected
    assert UsageSample.objects.filter(sandbox=sandbox).count() == 1


def test_the_last_partial_interval_is_charged_at_the_stop(settings, enqueued):
    gpus(2)
    student = funded_student(hours=10)
    sandbox, run = running(student, "gpu-1", ago=23.4)
    services.tick()
    committed(launcher.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="test")
    run.refresh_from_db()
    assert run.ended_at is not None
    assert run.settled
    assert usage_of(run) == owed(
        rate_millicredits=1000, started_at=run.started_at, until=run.ended_at
    )
    assert 23 <= usage_of(run) <= 24
    # The statement groups it by sandbox and profile.
    txn = LedgerTransaction.objects.filter(kind="usage").first()
    assert txn.metadata["sandbox"] == str(sandbox.public_id)
    assert txn.metadata["profile"] == sandbox.profile.name


def test_a_second_run_after_a_restart_is_charged_separately(settings, enqueued):
    gpus(2)
    student = funded_student(hours=10)
    sandbox, first = running(student, "cpu-small", ago=30)
    committed(launcher.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="test")
    committed(launcher.sandbox_restart, sandbox=sandbox, acting_user=student)
    committed(launcher.sandbox_mark_running, sandbox_id=sandbox.pk)
    second = SandboxRun.objects.get(sandbox=sandbox, ended_at__isnull=True)
    assert second.pk != first.pk
    first.refresh_from_db()
    assert first.settled
    assert usage_of(first) == owed(
        rate_millicredits=first.rate_millicredits, started_at=first.started_at, until=first.ended_at
    )


def test_an_empty_account_starts_the_countdown_then_the_launcher_stops_the_sandbox(
    settings, enqueued, sent
):
    settings.METERING_GRACE_SECONDS = 120
    gpus(2)
    student = funded_student(hours=0.52)  # 31.2 minutes of one GPU: just enough to launch
    sandbox, run = running(student, "gpu-1", ago=1900)  # ...and used beyond it
    account = account_for_student(student)
    now = timezone.now()

    result = services.tick(now=now)
    account.refresh_from_db()
    run.refresh_from_db()
    assert account.balance == 0
    assert result.unpaid > 0
    assert run.unpaid_credit_seconds == result.unpaid
    assert run.charged_credit_seconds == 1872 == usage_of(run)
    assert run.stop_at == now + dt.timedelta(seconds=120)
    assert result.countdowns == [str(sandbox.public_id)]
    warning = next(m for g, m in sent[-1] if m["type"] == "credits.warning")
    assert warning["kind"] == "exhausted"
    assert warning["sandboxes"] == [str(sandbox.public_id)]
    assert warning["stop_at"] is not None
    assert AuditEvent.objects.filter(action="sandbox.credits_exhausted").count() == 1
    # The books stay exact: nothing negative, the unpaid time is recorded, not hidden.
    assert UsageCharge.objects.filter(run=run, charged__lt=models_f("due")).exists()

    # Still counting down: not stopped yet, not warned (audited) twice.
    services.tick(now=now + dt.timedelta(seconds=60))
    assert committed(deadlines.sandboxes_stop_out_of_credits, now=now + later(60)) == []
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING
    assert AuditEvent.objects.filter(action="sandbox.credits_exhausted").count() == 1

    # The countdown is over: the tick only records it, and the launcher's beat task stops it.
    committed(services.tick, now=now + later(121))
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING
    stopped = committed(deadlines.sandboxes_stop_out_of_credits, now=now + later(121))
    sandbox.refresh_from_db()
    assert stopped == [sandbox]
    assert sandbox.status == Sandbox.Status.STOPPING
    assert sandbox.status_message == "The GPU credits ran out."
    reason = {"code": "out_of_credits", "params": {}}
    assert ("sandbox_stop", (sandbox.pk,), {"reason": reason}) in enqueued
    # While it stops, later runs do not ask again.
    committed(services.tick, now=now + later(131))
    assert committed(deadlines.sandboxes_stop_out_of_credits, now=now + later(131)) == []
    assert AuditEvent.objects.filter(action="sandbox.stop_requested").count() == 1
    committed(launcher.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="credits")
    assert not GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True).exists()


def later(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def test_the_stop_of_an_empty_account_is_on_the_beat_schedule_as_often_as_the_tick(settings):
    from portal.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["launcher-stop-out-of-credits"]
    assert entry["task"] == "launcher.sandboxes_stop_out_of_credits"
    assert entry["task"] in app.tasks
    assert entry["schedule"] == settings.METERING_INTERVAL


def models_f(name):
    from django.db.models import F

    return F(name)


def test_new_credits_during_the_countdown_cancel_it(settings, enqueued, sent):
    gpus(2)
    student = funded_student(hours=0.52)
    sandbox, run = running(student, "gpu-1", ago=1900)
    now = timezone.now()
    services.tick(now=now)
    run.refresh_from_db()
    assert run.stop_at is not None
    lot(account_for_student(student), 3600)
    services.tick(now=now + dt.timedelta(seconds=30))
    run.refresh_from_db()
    assert run.stop_at is None
    assert run.exhausted_at is None
    restored = [m for g, m in sent[-1] if m["type"] == "credits.warning"]
    assert restored
    assert restored[0]["kind"] == "restored"
    services.tick(now=now + dt.timedelta(seconds=200))
    assert committed(deadlines.sandboxes_stop_out_of_credits, now=now + later(200)) == []
    sandbox.refresh_from_db()
    assert sandbox.status == Sandbox.Status.RUNNING


def test_reconciliation_finds_no_drift_then_reports_a_tampered_counter(settings, enqueued):
    gpus(2)
    founder = funded_founder(hours=10)
    sandbox, run = running(founder, "gpu-1", ago=95)
    services.tick()
    report = services.reconcile()
    assert report["runs"] == 1
    assert report["drift"] == []
    assert report["unpaid"] == 0
    SandboxRun.objects.filter(pk=run.pk).update(charged_credit_seconds=1)
    report = services.reconcile()
    assert [d["run"] for d in report["drift"]] == [str(run.public_id)]
    assert AuditEvent.objects.filter(action="metering.drift").exists()


def test_a_running_sandbox_without_a_run_gets_one_from_its_start(enqueued):
    gpus(2)
    student = funded_student(hours=10)
    sandbox, run = running(student, "cpu-small")
    SandboxRun.objects.filter(pk=run.pk).delete()
    services.tick()
    assert SandboxRun.objects.get(sandbox=sandbox).started_at == sandbox.starting_at


def test_system_accounts_balance_with_usage(enqueued):
    gpus(2)
    founder = funded_founder(hours=10)
    running(founder, "gpu-1", ago=60)
    services.tick()
    usage = CreditAccount.objects.get(system_code=CreditAccount.System.USAGE)
    assert sum(LedgerEntry.objects.filter(account=usage).values_list("amount", flat=True)) > 0
    for txn in LedgerTransaction.objects.filter(kind="usage"):
        assert sum(txn.entries.values_list("amount", flat=True)) == 0
