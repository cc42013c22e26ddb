"""GPU time is charged from allocation (the sandbox goes to `starting`) to release, whether or
not the server ever becomes ready: a start that fails is not free GPU time. Every way the GPUs
are released closes the run and settles its last partial interval exactly once."""

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from portal.credits.models import LedgerEntry, LedgerTransaction
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.reconcile import reconcile as launcher_reconcile
from sandboxes.metering import services, tasks
from sandboxes.metering.models import SandboxRun, UsageCharge
from tests.sandboxes.launcher.helpers import committed, funded_founder, gpus, image, profile

pytestmark = pytest.mark.django_db
Status = Sandbox.Status
# An hour ahead, on the metering grid (credit lots are issued now and expire in 30 days).
T0 = (timezone.now() + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


def usage_of(run) -> int:
    return -sum(
        LedgerEntry.objects.filter(
            transaction__kind=LedgerTransaction.Kind.USAGE,
            transaction__metadata__run=str(run.public_id),
            account=run.account,
        ).values_list("amount", flat=True)
    )


def at(seconds: float):
    return time_machine.travel(T0 + dt.timedelta(seconds=seconds), tick=False)


class NoServers:
    """A hub that runs nothing (the start was lost)."""

    def servers_running(self):
        return {}

    def server_stop(self, *args, **kwargs):
        return True


def test_a_start_that_fails_after_30_seconds_is_charged_30_seconds(enqueued):
    # given a founder whose launch was given a GPU (one GPU: 1 credit-second per second)
    gpus(1)
    founder = funded_founder(hours=10)
    with at(0):
        sandbox = committed(
            launcher.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
        )
    account = sandbox.account
    account.refresh_from_db()
    before = account.balance

    # when the start fails 30 seconds later, the server never having become ready
    with at(30):
        committed(launcher.sandbox_mark_failed, sandbox_id=sandbox.pk, message="image broken")

    # then those 30 seconds of the GPU are charged, once, and the run is settled
    run = SandboxRun.objects.get(sandbox=sandbox)
    assert (run.started_at, run.ended_at) == (T0, T0 + dt.timedelta(seconds=30))
    assert run.settled
    assert usage_of(run) == run.charged_credit_seconds == 30
    account.refresh_from_db()
    assert before - account.balance == 30
    assert not GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True).exists()


def _release(how: str, sandbox: Sandbox, founder) -> None:
    if how == "failed":
        committed(launcher.sandbox_mark_failed, sandbox_id=sandbox.pk, message="boom")
    elif how == "stopped while starting":
        committed(launcher.sandbox_stop, sandbox=sandbox, acting_user=founder)
        committed(launcher.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="gone")
    elif how == "stopped after ready":
        committed(launcher.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="gone")
    elif how == "start lost (reconcile)":
        committed(launcher_reconcile, hub=NoServers(), containers={})
    else:  # deleted: only a stopped sandbox can be, so the release came first
        committed(launcher.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="gone")
        committed(launcher.sandbox_delete, sandbox=sandbox, acting_user=founder)


@pytest.mark.parametrize(
    "how",
    [
        "failed",
        "stopped while starting",
        "stopped after ready",
        "start lost (reconcile)",
        "deleted",
    ],
)
def test_every_release_charges_from_allocation_to_release_exactly_once(how, enqueued):
    # given a GPU sandbox allocated at T0, ticked along the way (ready at 100 s when it gets so)
    gpus(1)
    founder = funded_founder(hours=10)
    with at(0):
        sandbox = committed(
            launcher.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
        )
    with at(100):
        services.tick(sample=False)
        if how in ("stopped after ready", "deleted"):
            committed(launcher.sandbox_mark_running, sandbox_id=sandbox.pk)

    # when its GPUs are released 300.5 s after the allocation
    with at(300.5):
        _release(how, sandbox, founder)
        # and the settle runs again (a retried task) and a tick follows
        tasks.run_settle_task(SandboxRun.objects.get(sandbox=sandbox).pk)
        services.tick(sample=False)

    # then the charges cover exactly allocation to release, each interval once, and agree
    sandbox.refresh_from_db()
    assert sandbox.status in (Status.STOPPED, Status.FAILED)
    run = SandboxRun.objects.get(sandbox=sandbox)
    assert (run.started_at, run.ended_at) == (T0, T0 + dt.timedelta(seconds=300.5))
    assert run.settled
    assert usage_of(run) == run.charged_credit_seconds == 300
    keys = list(UsageCharge.objects.filter(run=run).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    report = services.reconcile(since=T0)
    assert report["drift"] == []
    assert not GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True).exists()


def test_a_queued_sandbox_is_charged_from_when_it_gets_its_gpu(enqueued):
    # given the only GPU held by one founder, and a second founder queued behind them
    gpus(1)
    first, second = funded_founder(hours=10), funded_founder(hours=10)
    with at(0):
        held = committed(
            launcher.sandbox_launch, user=first, image=image(), profile=profile("gpu-1")
        )
        queued = committed(
            launcher.sandbox_launch, user=second, image=image(), profile=profile("gpu-1")
        )
    assert queued.status == Status.QUEUED
    assert not SandboxRun.objects.filter(sandbox=queued).exists()  # waiting costs nothing

    # when the GPU is released at 60 s and the queued start fails at 75 s
    with at(60):
        committed(launcher.sandbox_mark_failed, sandbox_id=held.pk, message="boom")
    queued.refresh_from_db()
    assert queued.status == Status.STARTING
    with at(75):
        committed(launcher.sandbox_mark_failed, sandbox_id=queued.pk, message="boom")

    # then the queued one is charged its 15 seconds of allocation, no more
    run = SandboxRun.objects.get(sandbox=queued)
    assert run.started_at == T0 + dt.timedelta(seconds=60)
    assert usage_of(run) == 15


def test_a_tick_opens_a_missing_run_of_a_starting_sandbox_from_its_start(enqueued):
    # given a starting sandbox whose run is missing (it started before runs opened at the start)
    gpus(1)
    founder = funded_founder(hours=10)
    with at(0):
        sandbox = committed(
            launcher.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
        )
    SandboxRun.objects.filter(sandbox=sandbox).delete()

    # when a tick runs 40 s later
    with at(40):
        services.tick(sample=False)

    # then the run counts from the allocation, and the 40 s are charged
    run = SandboxRun.objects.get(sandbox=sandbox)
    assert run.started_at == T0
    assert usage_of(run) == 40
