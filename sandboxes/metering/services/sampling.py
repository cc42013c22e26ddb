"""Sampling: what every open run's sandbox and every GPU use now (Docker stats, NVML or the
simulated GPUs), stored in bulk, with the `usage.sample` and `cluster.gpus` messages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, OuterRef

from sandboxes.gpus.backends import backend_from_setting
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.live import broadcast

from .. import telemetry
from ..charging import slot_start
from ..messages import SERVING, cluster_message, reading_fields, usage_sample_message
from ..models import DeviceSample, SandboxRun, UsageSample


@dataclass
class Sampled:
    samples: int  # usage samples stored (one per open run)
    messages: list[tuple[str, dict]]


def sample(runs: list[SandboxRun], *, held: dict, now: dt.datetime) -> Sampled:
    """Read the telemetry of the open runs' containers and of every GPU, store one UsageSample
    per sandbox and one DeviceSample per GPU, and build their live messages (`held`: each
    sandbox's GPUs)."""
    interval = settings.METERING_INTERVAL
    taken_at = slot_start(now, interval)
    open_runs = [r for r in runs if r.ended_at is None]
    containers = telemetry.containers_read({str(r.sandbox.public_id) for r in open_runs})
    # Devices a model deployment's replica holds are read in the same query (no run of ours
    # holds them; the cluster view shows them held by model serving).
    serving = GpuAllocation.objects.filter(
        device=OuterRef("pk"), released_at__isnull=True, replica__isnull=False
    )
    devices = list(
        GpuDevice.objects.filter(mig_enabled=False)
        .annotate(serving=Exists(serving))
        .order_by("index", "mig_profile")
    )
    holder_of = {d.pk: r for r in open_runs for d in held.get(r.sandbox_id, [])}
    loads = {}
    for device in devices:
        run = holder_of.get(device.pk)
        load = None
        if run is not None:
            reading = containers.get(str(run.sandbox.public_id))
            cpu = reading.cpu_pct if reading is not None else None
            # One busy core keeps a (pretend) GPU busy: a notebook drives its GPU from one.
            load = 0.0 if cpu is None else cpu / 100
        loads[device.uuid] = (device.memory_mib, load)
    backend = backend_from_setting()
    gpus = telemetry.gpus_read(backend, loads, tick=int(taken_at.timestamp()) // interval)

    usage_rows, device_rows, messages = [], [], []
    for device in devices:
        reading = gpus.get(device.uuid)
        run = holder_of.get(device.pk)
        if reading is None and run is None:
            continue
        device_rows.append(
            DeviceSample(
                device_id=device.pk,
                sandbox_id=run.sandbox_id if run else None,
                taken_at=taken_at,
                util_pct=reading.util_pct if reading else None,
                memory_used_mib=reading.memory_used_mib if reading else None,
                power_w=reading.power_w if reading else None,
                temperature_c=reading.temperature_c if reading else None,
            )
        )
    for run in open_runs:
        sandbox = run.sandbox
        container = containers.get(str(sandbox.public_id))
        its = [(d, gpus.get(d.uuid)) for d in held.get(sandbox.pk, [])]
        row = UsageSample(
            sandbox_id=sandbox.pk,
            taken_at=taken_at,
            gpu_count=len(its),
            gpu_util_pct=_mean(r.util_pct for _d, r in its if r),
            gpu_memory_used_mib=_total(r.memory_used_mib for _d, r in its if r),
            gpu_power_w=_total(r.power_w for _d, r in its if r),
            gpu_temperature_c=_peak(r.temperature_c for _d, r in its if r),
            cpu_pct=container.cpu_pct if container else None,
            memory_used_mib=container.memory_used_mib if container else None,
        )
        usage_rows.append(row)
        message = usage_sample_message(
            run=run, row=row, gpus=its, container=container, simulated=backend.simulated, at=now
        )
        messages += [(group, message) for group in broadcast.sandbox_groups(sandbox)]
    UsageSample.objects.bulk_create(usage_rows, ignore_conflicts=True)
    DeviceSample.objects.bulk_create(device_rows, ignore_conflicts=True)
    cluster = []
    for device in devices:
        run = holder_of.get(device.pk)
        holder = run.sandbox if run is not None else (SERVING if device.serving else None)
        cluster.append((device, holder, reading_fields(gpus.get(device.uuid))))
    messages.append((broadcast.CLUSTER_GROUP, cluster_message(gpus=cluster, at=now)))
    return Sampled(samples=len(usage_rows), messages=messages)


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 1) if values else None


def _total(values):
    values = [v for v in values if v is not None]
    return round(sum(values), 1) if values else None


def _peak(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None
