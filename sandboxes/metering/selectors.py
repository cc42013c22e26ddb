"""What pages and the API read about usage. Charts read roll-ups (raw samples only for the
last hour at full resolution); live values come from the latest sample and the run."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from portal.credits.models import CreditAccount
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.launcher.models import Sandbox

from .messages import SERVING, balance_message, cluster_message, iso
from .models import DeviceSample, SandboxRun, Step, UsageRollup, UsageSample

SERIES = ["gpu_util_pct", "gpu_memory_used_mib", "gpu_power_w", "cpu_pct", "memory_used_mib"]
STEPS = {"raw": None, "minute": Step.MINUTE, "hour": Step.HOUR}
MAX_POINTS = 5000


def step_for(start: dt.datetime, end: dt.datetime) -> str:
    """The finest step that keeps a chart under MAX_POINTS points."""
    span = (end - start).total_seconds()
    if span <= 3600:
        return "raw"
    if span / 60 <= MAX_POINTS:
        return "minute"
    return "hour"


def usage_series(*, sandbox, start: dt.datetime, end: dt.datetime, step: str) -> dict:
    """Column-oriented series for a chart: {"step", "t": [epoch seconds], and one list per
    metric}. `step` is raw, minute or hour."""
    if step == "raw":
        rows = UsageSample.objects.filter(
            sandbox=sandbox, taken_at__gte=start, taken_at__lt=end
        ).order_by("taken_at")
        time_field = "taken_at"
    else:
        rows = UsageRollup.objects.filter(
            sandbox=sandbox, step=STEPS[step], bucket__gte=start, bucket__lt=end
        ).order_by("bucket")
        time_field = "bucket"
    series: dict = {"step": step, "t": []}
    for name in SERIES:
        series[name] = []
    for row in rows.values(time_field, *SERIES)[:MAX_POINTS]:
        series["t"].append(int(row[time_field].timestamp()))
        for name in SERIES:
            value = row[name]
            series[name].append(None if value is None else round(value, 1))
    return series


def sandbox_latest(*, sandbox) -> UsageSample | None:
    return UsageSample.objects.filter(sandbox=sandbox).order_by("-taken_at").first()


def run_current(*, sandbox) -> SandboxRun | None:
    """The open run of a sandbox, or its latest."""
    return (
        SandboxRun.objects.filter(sandbox=sandbox)
        .order_by(F("ended_at").desc(nulls_first=True), "-started_at")
        .first()
    )


def sandbox_charged(*, sandbox) -> int:
    """Credit-seconds charged for a sandbox over all its runs."""
    return sum(
        SandboxRun.objects.filter(sandbox=sandbox).values_list("charged_credit_seconds", flat=True)
    )


def account_snapshot(*, account: CreditAccount) -> dict:
    """The `credits.balance` message as the tick would send it now (a page's first paint), and
    when the account's first sandbox stops for want of credits (None: no countdown)."""
    runs = SandboxRun.objects.filter(account=account, ended_at__isnull=True)
    burn = sum(runs.values_list("rate_millicredits", flat=True))
    stop_at = (
        runs.filter(stop_at__isnull=False).order_by("stop_at").values_list("stop_at", flat=True)
    ).first()
    return {
        **balance_message(account=account, burn_millicredits=burn, at=timezone.now()),
        "stop_at": iso(stop_at) if stop_at else None,
    }


def sandbox_ids_out_of_credits(*, now: dt.datetime) -> list[int]:
    """The sandboxes whose stop countdown is over: their open run's `stop_at`, which the tick
    sets when the account runs dry and clears when it is funded again, has passed. (The launcher
    stops them: launcher.deadlines.)"""
    return list(
        SandboxRun.objects.filter(ended_at__isnull=True, stop_at__lte=now).values_list(
            "sandbox_id", flat=True
        )
    )


def organisation_running(*, organisation):
    """The organisation's members' live sandboxes, for its live page."""
    return (
        Sandbox.objects.filter(organisation=organisation, deleted_at__isnull=True)
        .filter(Q(status__in=Sandbox.LIVE))
        .select_related("user", "profile", "image")
        .order_by("-running_at", "-created_at")
    )


def metering_interval() -> int:
    return settings.METERING_INTERVAL


def cluster_snapshot() -> dict:
    """The `cluster.gpus` message from the latest stored samples (a page's first paint; the
    tick's broadcasts take over from there). A free GPU's utilisation and memory are left out:
    the last sample may be its previous holder's."""
    latest = DeviceSample.objects.filter(device=OuterRef("pk")).order_by("-taken_at")
    devices = (
        GpuDevice.objects.filter(mig_enabled=False)
        .annotate(
            **{
                f"last_{name}": Subquery(latest.values(name)[:1])
                for name in ("util_pct", "memory_used_mib", "power_w", "temperature_c")
            }
        )
        .order_by("index", "mig_profile")
    )
    holders = {
        a.device_id: a.sandbox if a.sandbox_id is not None else SERVING
        for a in GpuAllocation.objects.filter(released_at__isnull=True).select_related(
            "sandbox__user", "sandbox__organisation"
        )
    }
    gpus = []
    for device in devices:
        sandbox = holders.get(device.pk)
        readings = {
            "util_pct": device.last_util_pct if sandbox else None,
            "memory_used_mib": device.last_memory_used_mib if sandbox else None,
            "power_w": device.last_power_w,
            "temperature_c": device.last_temperature_c,
        }
        gpus.append((device, sandbox, readings))
    return cluster_message(gpus=gpus, at=timezone.now())


def latest_samples(*, sandboxes) -> dict[int, UsageSample]:
    """The latest UsageSample of each of `sandboxes`, by sandbox id, in one query whatever
    their number (a live page's first paint; `sandbox_latest` reads one)."""
    newest = UsageSample.objects.filter(sandbox=OuterRef("pk")).order_by("-taken_at")
    sample_ids = (
        Sandbox.objects.filter(pk__in=[sandbox.pk for sandbox in sandboxes])
        .annotate(latest=Subquery(newest.values("pk")[:1]))
        .exclude(latest=None)
        .values_list("latest", flat=True)
    )
    return {s.sandbox_id: s for s in UsageSample.objects.filter(pk__in=sample_ids)}


def open_run_get(*, sandbox) -> SandboxRun | None:
    """The sandbox's open run (allocated now), or None. (`run_current` falls back to an ended
    run; the live pages need to know whether the one usage.sample speaks of is open. The
    service that opens a run is `services.run_open`.)"""
    return SandboxRun.objects.filter(sandbox=sandbox, ended_at__isnull=True).first()
