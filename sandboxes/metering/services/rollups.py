"""Roll-ups and retention: per-minute and per-hour averages of the samples (what charts read),
per-hour device figures (the cluster's history), and the pruning of raw samples."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, F, Max, Q, Sum
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from ..models import DeviceRollup, DeviceSample, Step, UsageRollup, UsageSample

IDLE_UTIL_PCT = 5.0
_ROLLED = ["gpu_util_pct", "gpu_memory_used_mib", "gpu_power_w", "cpu_pct"]
_PEAKS = ["gpu_temperature_c", "memory_used_mib"]


def rollups_refresh(now: dt.datetime) -> None:
    """Recompute the minute buckets the last minute touched, then the hour buckets from those
    minutes (weighted by their sample counts). Upserts: running it twice changes nothing."""
    since_minute = (now - dt.timedelta(seconds=60)).replace(second=0, microsecond=0)
    since_hour = (now - dt.timedelta(seconds=120)).replace(minute=0, second=0, microsecond=0)
    if connection.vendor == "postgresql":
        _refresh_in_the_database(since_minute, since_hour)
        return
    minutes = (
        UsageSample.objects.filter(taken_at__gte=since_minute)
        .annotate(bucket=TruncMinute("taken_at", tzinfo=dt.UTC))
        .values("sandbox_id", "bucket")
        .annotate(
            samples=Count("id"),
            **{name: Avg(name) for name in _ROLLED},
            **{name: Max(name) for name in _PEAKS},
        )
    )
    _upsert(Step.MINUTE, minutes)
    weighted = {
        name: Sum(F(name) * F("samples")) / Sum("samples", filter=Q(**{f"{name}__isnull": False}))
        for name in _ROLLED
    }
    hours = (
        UsageRollup.objects.filter(step=Step.MINUTE, bucket__gte=since_hour)
        .annotate(hour=TruncHour("bucket", tzinfo=dt.UTC))
        .values("sandbox_id", "hour")
        .annotate(total=Sum("samples"), **weighted, **{name: Max(name) for name in _PEAKS})
    )
    _upsert(Step.HOUR, ({**row, "bucket": row["hour"], "samples": row["total"]} for row in hours))
    devices = (
        DeviceSample.objects.filter(taken_at__gte=since_hour)
        .annotate(bucket=TruncHour("taken_at", tzinfo=dt.UTC))
        .values("device_id", "bucket")
        .annotate(
            samples=Count("id"),
            util=Avg("util_pct"),
            held=Count("id", filter=Q(sandbox_id__isnull=False)),
            idle_held=Count("id", filter=Q(sandbox_id__isnull=False, util_pct__lt=IDLE_UTIL_PCT)),
        )
    )
    DeviceRollup.objects.bulk_create(
        [
            DeviceRollup(
                device_id=row["device_id"],
                bucket=row["bucket"],
                samples=row["samples"],
                util_pct=row["util"],
                held_samples=row["held"],
                idle_held_samples=row["idle_held"],
            )
            for row in devices
        ],
        update_conflicts=True,
        unique_fields=["device", "bucket"],
        update_fields=["samples", "util_pct", "held_samples", "idle_held_samples"],
    )


# The same three upserts as the ORM's, computed and written by the server: at a thousand
# sandboxes, reading the buckets into Python and writing them back cost four times the SQL.
# One round trip, one implicit transaction (a multi-statement query, client-side bound).
_REFRESH_SQL = """
INSERT INTO metering_usagerollup AS r (sandbox_id, step, bucket, samples, gpu_util_pct,
    gpu_memory_used_mib, gpu_power_w, gpu_temperature_c, cpu_pct, memory_used_mib)
SELECT s.sandbox_id, %(minute)s, date_trunc('minute', s.taken_at, 'UTC'), count(*),
    avg(s.gpu_util_pct), avg(s.gpu_memory_used_mib), avg(s.gpu_power_w),
    max(s.gpu_temperature_c), avg(s.cpu_pct), max(s.memory_used_mib)
FROM metering_usagesample s WHERE s.taken_at >= %(since_minute)s
GROUP BY 1, 3
ON CONFLICT (sandbox_id, step, bucket) DO UPDATE SET samples = EXCLUDED.samples,
    gpu_util_pct = EXCLUDED.gpu_util_pct, gpu_memory_used_mib = EXCLUDED.gpu_memory_used_mib,
    gpu_power_w = EXCLUDED.gpu_power_w, gpu_temperature_c = EXCLUDED.gpu_temperature_c,
    cpu_pct = EXCLUDED.cpu_pct, memory_used_mib = EXCLUDED.memory_used_mib;

INSERT INTO metering_usagerollup AS r (sandbox_id, step, bucket, samples, gpu_util_pct,
    gpu_memory_used_mib, gpu_power_w, gpu_temperature_c, cpu_pct, memory_used_mib)
SELECT m.sandbox_id, %(hour)s, date_trunc('hour', m.bucket, 'UTC'), sum(m.samples),
    sum(m.gpu_util_pct * m.samples)
        / sum(m.samples) FILTER (WHERE m.gpu_util_pct IS NOT NULL),
    sum(m.gpu_memory_used_mib * m.samples)
        / sum(m.samples) FILTER (WHERE m.gpu_memory_used_mib IS NOT NULL),
    sum(m.gpu_power_w * m.samples)
        / sum(m.samples) FILTER (WHERE m.gpu_power_w IS NOT NULL),
    max(m.gpu_temperature_c),
    sum(m.cpu_pct * m.samples) / sum(m.samples) FILTER (WHERE m.cpu_pct IS NOT NULL),
    max(m.memory_used_mib)
FROM metering_usagerollup m WHERE m.step = %(minute)s AND m.bucket >= %(since_hour)s
GROUP BY 1, 3
ON CONFLICT (sandbox_id, step, bucket) DO UPDATE SET samples = EXCLUDED.samples,
    gpu_util_pct = EXCLUDED.gpu_util_pct, gpu_memory_used_mib = EXCLUDED.gpu_memory_used_mib,
    gpu_power_w = EXCLUDED.gpu_power_w, gpu_temperature_c = EXCLUDED.gpu_temperature_c,
    cpu_pct = EXCLUDED.cpu_pct, memory_used_mib = EXCLUDED.memory_used_mib;

INSERT INTO metering_devicerollup AS r (device_id, bucket, samples, util_pct, held_samples,
    idle_held_samples)
SELECT d.device_id, date_trunc('hour', d.taken_at, 'UTC'), count(*), avg(d.util_pct),
    count(*) FILTER (WHERE d.sandbox_id IS NOT NULL),
    count(*) FILTER (WHERE d.sandbox_id IS NOT NULL AND d.util_pct < %(idle)s)
FROM metering_devicesample d WHERE d.taken_at >= %(since_hour)s
GROUP BY 1, 2
ON CONFLICT (device_id, bucket) DO UPDATE SET samples = EXCLUDED.samples,
    util_pct = EXCLUDED.util_pct, held_samples = EXCLUDED.held_samples,
    idle_held_samples = EXCLUDED.idle_held_samples
"""


def _refresh_in_the_database(since_minute: dt.datetime, since_hour: dt.datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _REFRESH_SQL,
            {
                "minute": Step.MINUTE,
                "hour": Step.HOUR,
                "since_minute": since_minute,
                "since_hour": since_hour,
                "idle": IDLE_UTIL_PCT,
            },
        )


def _upsert(step: str, rows) -> None:
    UsageRollup.objects.bulk_create(
        [
            UsageRollup(
                sandbox_id=row["sandbox_id"],
                step=step,
                bucket=row["bucket"],
                samples=row["samples"],
                **{name: row[name] for name in _ROLLED + _PEAKS},
            )
            for row in rows
        ],
        update_conflicts=True,
        unique_fields=["sandbox", "step", "bucket"],
        update_fields=["samples", *_ROLLED, *_PEAKS],
    )


def samples_prune(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Raw samples older than the retention go (charts read roll-ups); minute roll-ups after
    their own, longer retention; hour roll-ups stay."""
    now = now or timezone.now()
    raw_before = now - dt.timedelta(hours=settings.METERING_RAW_RETENTION_HOURS)
    minute_before = now - dt.timedelta(days=settings.METERING_MINUTE_ROLLUP_RETENTION_DAYS)
    return {
        "usage_samples": UsageSample.objects.filter(taken_at__lt=raw_before).delete()[0],
        "device_samples": DeviceSample.objects.filter(taken_at__lt=raw_before).delete()[0],
        "minute_rollups": UsageRollup.objects.filter(
            step=Step.MINUTE, bucket__lt=minute_before
        ).delete()[0],
    }
