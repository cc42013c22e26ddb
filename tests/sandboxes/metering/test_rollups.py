"""The sample roll-ups: minute averages and peaks, hour averages weighted by each minute's
samples, device hours with their held and idle-held counts. On PostgreSQL the server computes
and upserts them in one round trip, elsewhere the ORM does: the same figures either way."""

import datetime as dt

import pytest

from sandboxes.gpus.models import GpuDevice
from sandboxes.metering.models import DeviceRollup, DeviceSample, UsageRollup, UsageSample
from sandboxes.metering.services.rollups import rollups_refresh
from tests.sandboxes.launcher.helpers import funded_student, gpus

from .helpers import running

pytestmark = pytest.mark.django_db

HOUR = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)


def at(minute: int, second: int) -> dt.datetime:
    return HOUR + dt.timedelta(minutes=minute, seconds=second)


def sample(sandbox, when, *, util=None, memory=None, temperature=None, cpu=None):
    UsageSample.objects.create(
        sandbox=sandbox,
        taken_at=when,
        gpu_count=1 if util is not None else 0,
        gpu_util_pct=util,
        gpu_memory_used_mib=memory,
        gpu_temperature_c=temperature,
        cpu_pct=cpu,
        memory_used_mib=memory,
    )


def rollup(sandbox, step, bucket):
    return UsageRollup.objects.get(sandbox_id=sandbox.pk, step=step, bucket=bucket)


def test_minutes_average_hours_weigh_minutes_by_their_samples_and_a_rerun_changes_nothing(
    enqueued,
):
    gpus(1)
    sandbox, _run = running(funded_student(hours=10), "gpu-1")
    # Minute 58: three samples; minute 59: one, with no GPU reading (a gap).
    sample(sandbox, at(58, 0), util=10.0, memory=100, temperature=40, cpu=30.0)
    sample(sandbox, at(58, 20), util=20.0, memory=300, temperature=60, cpu=None)
    sample(sandbox, at(58, 40), util=60.0, memory=200, temperature=50, cpu=60.0)
    sample(sandbox, at(59, 10), cpu=90.0)
    # An older sample, outside the window the refresh recomputes, is left alone.
    sample(sandbox, at(40, 0), util=99.0, cpu=99.0)

    for _ in range(2):
        rollups_refresh(at(59, 50))

        minute = rollup(sandbox, "minute", at(58, 0))
        assert minute.samples == 3
        assert minute.gpu_util_pct == pytest.approx(30.0)
        assert minute.gpu_memory_used_mib == pytest.approx(200.0)
        assert minute.gpu_temperature_c == 60  # the peak
        assert minute.memory_used_mib == 300  # the peak
        assert minute.cpu_pct == pytest.approx(45.0)  # the average of the readings there are
        gap = rollup(sandbox, "minute", at(59, 0))
        assert (gap.samples, gap.gpu_util_pct, gap.cpu_pct) == (1, None, pytest.approx(90.0))
        assert not UsageRollup.objects.filter(step="minute", bucket=at(40, 0)).exists()

        hour = rollup(sandbox, "hour", HOUR)
        assert hour.samples == 4
        # The GPU average of the hour is minute 58's: minute 59 had no GPU reading.
        assert hour.gpu_util_pct == pytest.approx(30.0)
        assert hour.cpu_pct == pytest.approx((45.0 * 3 + 90.0 * 1) / 4)
        assert hour.gpu_temperature_c == 60
    assert UsageRollup.objects.count() == 3


def test_device_hours_count_held_and_idle_held_samples(enqueued):
    gpus(2)
    sandbox, _run = running(funded_student(hours=10), "gpu-1")
    held, free = GpuDevice.objects.order_by("index")
    for second, util in ((0, 2.0), (10, 50.0), (20, 4.0)):
        DeviceSample.objects.create(
            device=held, sandbox=sandbox, taken_at=at(30, second), util_pct=util
        )
    DeviceSample.objects.create(device=free, sandbox=None, taken_at=at(30, 0), util_pct=1.0)

    rollups_refresh(at(30, 30))

    busy = DeviceRollup.objects.get(device=held, bucket=HOUR)
    assert (busy.samples, busy.held_samples, busy.idle_held_samples) == (3, 3, 2)
    assert busy.util_pct == pytest.approx(56.0 / 3)
    idle = DeviceRollup.objects.get(device=free, bucket=HOUR)
    assert (idle.samples, idle.held_samples, idle.idle_held_samples) == (1, 0, 0)
