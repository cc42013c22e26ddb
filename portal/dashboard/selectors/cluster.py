"""The cluster's page: its history per device and day, idle-but-allocated time per holder, and
this month's top consumers (the overview draws `cluster_hourly` too).

- The cluster's history is `DeviceRollup` (one row per device per hour: samples, average
  utilisation, samples held, samples held while under 5 % busy). A sample stands for one
  metering interval, so time is samples × METERING_INTERVAL.
- Idle-but-allocated time per holder ("hoarding") is `DeviceRollup`'s idle-held samples,
  attributed to whoever held the device in that hour (`GpuAllocation`): see `holders_idle`.
"""

import bisect
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from portal.credits.models import CreditAccount
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.metering.models import DeviceRollup

from .figures import K, local_midnight, month_rollups, this_month

HOUR = dt.timedelta(hours=1)


# --- The cluster's history (DeviceRollup) ---------------------------------------------------


_ROLLUP_SUMS = ("samples_total", "util_weighted", "util_samples", "held", "idle")


def _rollup_sums() -> dict:
    """Aggregates over DeviceRollup rows (named as in _ROLLUP_SUMS): utilisation weighted by
    each hour's samples."""
    with_reading = Q(util_pct__isnull=False)
    return {
        "samples_total": Sum("samples"),
        "util_weighted": Sum(F("util_pct") * F("samples"), filter=with_reading),
        "util_samples": Sum("samples", filter=with_reading),
        "held": Sum("held_samples"),
        "idle": Sum("idle_held_samples"),
    }


def _util(row: dict) -> float | None:
    if not row["util_samples"]:
        return None
    return round(row["util_weighted"] / row["util_samples"], 1)


def _share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _sums_add(total: dict, row: dict) -> None:
    """Add one `_rollup_sums` row into a running total (a defaultdict(int))."""
    for name in _ROLLUP_SUMS:
        total[name] += row[name] or 0


def _usage_day(day: dt.date | None, sums: dict) -> "UsageDay":
    """A day (or a whole window, `day` None) from `_rollup_sums` figures."""
    interval = settings.METERING_INTERVAL
    return UsageDay(
        day=day,
        util_pct=_util(sums),
        held_seconds=(sums["held"] or 0) * interval,
        idle_held_seconds=(sums["idle"] or 0) * interval,
        samples=sums["samples_total"] or 0,
    )


class _HeldTime:
    """Held and idle-held seconds, read as hours and as the idle share."""

    held_seconds: float
    idle_held_seconds: float

    @property
    def held_hours(self) -> float:
        return round(self.held_seconds / 3600, 1)

    @property
    def idle_held_hours(self) -> float:
        return round(self.idle_held_seconds / 3600, 1)

    @property
    def idle_share_pct(self) -> float | None:
        return _share(self.idle_held_seconds, self.held_seconds)


@dataclass(frozen=True)
class UsageDay(_HeldTime):
    """One device (or the whole cluster) over one local day."""

    day: dt.date
    util_pct: float | None
    held_seconds: int
    idle_held_seconds: int
    samples: int = 0

    @property
    def level(self) -> int:
        """A band of utilisation for the table's shading: 0 idle (under 5 %) … 4 (75 % up)."""
        if self.util_pct is None:
            return 0
        return sum(self.util_pct >= edge for edge in (5, 25, 50, 75))


@dataclass
class ClusterHours:
    """The cluster hour by hour (a chart) and day by day (its text equivalent)."""

    series: dict
    days: list[UsageDay]


def cluster_hourly(*, hours: int = 7 * 24, now: dt.datetime | None = None) -> ClusterHours:
    """The last `hours` hours of the whole cluster, one query: average utilisation, and the
    share of device time held and held while idle. Hours without readings are gaps."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + HOUR
    start = end - hours * HOUR
    rows = {
        row["bucket"]: row
        for row in DeviceRollup.objects.filter(bucket__gte=start, bucket__lt=end)
        .values("bucket")
        .annotate(**_rollup_sums())
    }
    series: dict = {"t": [], "util_pct": [], "held_pct": [], "idle_held_pct": []}
    by_day: dict[dt.date, dict] = defaultdict(lambda: defaultdict(int))
    tz = timezone.get_default_timezone()
    bucket = start
    while bucket < end:
        row = rows.get(bucket)
        series["t"].append(int(bucket.timestamp()))
        if row is None:
            for name in ("util_pct", "held_pct", "idle_held_pct"):
                series[name].append(None)
        else:
            series["util_pct"].append(_util(row))
            series["held_pct"].append(_share(row["held"], row["samples_total"]))
            series["idle_held_pct"].append(_share(row["idle"], row["samples_total"]))
            _sums_add(by_day[bucket.astimezone(tz).date()], row)
        bucket += HOUR
    days = [_usage_day(day, sums) for day, sums in sorted(by_day.items(), reverse=True)]
    return ClusterHours(series=series, days=days)


@dataclass
class DeviceDays:
    device: GpuDevice
    days: list[UsageDay | None]
    total: UsageDay


@dataclass
class DeviceHistory:
    """Utilisation per device per local day (columns: days, newest last)."""

    days: list[dt.date]
    devices: list[DeviceDays]
    cluster: list[UsageDay | None] = field(default_factory=list)  # every device, per day

    @property
    def start(self) -> dt.datetime:
        """The first instant of the first day (for other figures over the same window)."""
        return local_midnight(self.days[0])

    @property
    def series(self) -> dict:
        """The cluster's days as a chart: GPU-hours held and held while idle."""
        return {
            "t": [int(local_midnight(day).timestamp()) for day in self.days],
            "held_hours": [d.held_hours if d else None for d in self.cluster],
            "idle_held_hours": [d.idle_held_hours if d else None for d in self.cluster],
            "util_pct": [d.util_pct if d else None for d in self.cluster],
        }


def device_history(*, days: int = 14, today: dt.date | None = None) -> DeviceHistory:
    """The last `days` local days (today included), per device: two queries (the roll-ups
    summed per device and day, and the devices)."""
    today = today or timezone.localdate()
    tz = timezone.get_default_timezone()
    dates = [today - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]
    start, end = local_midnight(dates[0]), local_midnight(today + dt.timedelta(days=1))
    rows = (
        DeviceRollup.objects.filter(bucket__gte=start, bucket__lt=end)
        .annotate(day=TruncDate("bucket", tzinfo=tz))
        .values("device_id", "day")
        .annotate(**_rollup_sums())
    )
    cells: dict[int, dict[dt.date, dict]] = defaultdict(dict)
    for row in rows:
        cells[row["device_id"]][row["day"]] = row
    devices = GpuDevice.objects.filter(Q(mig_enabled=False) | Q(pk__in=list(cells))).order_by(
        "index", "mig_profile", "uuid"
    )

    def summed(day, rows) -> UsageDay | None:
        if not rows:
            return None
        totals = defaultdict(int)
        for row in rows:
            _sums_add(totals, row)
        return _usage_day(day, totals)

    history = DeviceHistory(days=dates, devices=[])
    for device in devices:
        mine = cells.get(device.pk, {})
        history.devices.append(
            DeviceDays(
                device=device,
                days=[_usage_day(day, mine[day]) if day in mine else None for day in dates],
                total=summed(None, list(mine.values()))
                or UsageDay(day=None, util_pct=None, held_seconds=0, idle_held_seconds=0),
            )
        )
    history.cluster = [
        summed(day, [cells[d][day] for d in cells if day in cells[d]]) for day in dates
    ]
    return history


@dataclass
class HolderIdle(_HeldTime):
    """A holder's GPU time over a window: held, and held while idle (under 5 % busy)."""

    account_public_id: str | None
    kind: str
    name: str
    held_seconds: float = 0.0
    idle_held_seconds: float = 0.0


def holders_idle(
    *, start: dt.datetime, end: dt.datetime, limit: int = 20, now: dt.datetime | None = None
) -> list[HolderIdle]:
    """Idle-but-allocated GPU-hours per holder (organisation or student), most idle first.

    Why from `DeviceRollup` and `GpuAllocation`, not from `UsageRollup`: a device roll-up counts
    idle-held *samples of each GPU* (under 5 % in that tick), the very figure the per-device
    history shows, so the holders' idle hours add up to the devices' idle hours. A sandbox's
    usage roll-up averages its GPUs and its hour, so a sandbox with one busy and one idle GPU,
    or idle for 50 minutes and busy for 10, would not count as idle at all; and it does not
    record how many GPUs the sandbox held.

    A device roll-up does not say who held the device; its allocations do (from `created_at`
    to `released_at`; a device has one open allocation at most, so they never overlap). Each
    device-hour's held and idle-held samples go to the allocations that overlap that hour, in
    proportion to the overlap: exact when one holder had the device all hour (the usual case),
    an even-handed split when it changed hands within the hour. Held time is attributed the same
    way, so the idle share is of time each holder actually held. Three queries whatever the
    window (roll-ups, allocations, then the named holders); the attribution runs here, over at
    most devices × hours rows.
    """
    now = now or timezone.now()
    interval = settings.METERING_INTERVAL
    rollups = (
        DeviceRollup.objects.filter(bucket__gte=start, bucket__lt=end, held_samples__gt=0)
        .order_by("device_id", "bucket")
        .values_list("device_id", "bucket", "held_samples", "idle_held_samples")
    )
    allocations: dict[int, list[tuple]] = defaultdict(list)
    for device_id, held_from, released, account_id in (
        GpuAllocation.objects.filter(created_at__lt=end)
        .filter(Q(released_at__isnull=True) | Q(released_at__gt=start))
        .order_by("device_id", "created_at")
        .values_list("device_id", "created_at", "released_at", "sandbox__account_id")
    ):
        allocations[device_id].append((held_from, released or now, account_id))
    starts = {device: [a[0] for a in spans] for device, spans in allocations.items()}

    totals: dict[int | None, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for device_id, bucket, held, idle in rollups:
        hour_end = bucket + HOUR
        spans = allocations.get(device_id, [])
        overlaps = []
        i = bisect.bisect_left(starts.get(device_id, []), hour_end) - 1
        while i >= 0 and spans[i][1] > bucket:
            held_from, held_to, account_id = spans[i]
            seconds = (min(held_to, hour_end) - max(held_from, bucket)).total_seconds()
            if seconds > 0:
                overlaps.append((account_id, seconds))
            i -= 1
        whole = sum(seconds for _account, seconds in overlaps)
        if not whole:  # held in the samples, yet no allocation recorded: shown, not hidden
            overlaps, whole = [(None, 1.0)], 1.0
        for account_id, seconds in overlaps:
            share = seconds / whole
            totals[account_id][0] += held * interval * share
            totals[account_id][1] += idle * interval * share

    ranked = sorted(totals.items(), key=lambda item: (-item[1][1], -item[1][0]))[:limit]
    accounts = CreditAccount.objects.select_related("organisation", "user").in_bulk(
        [account_id for account_id, _sums in ranked if account_id is not None]
    )
    result = []
    for account_id, (held_seconds, idle_seconds) in ranked:
        account = accounts.get(account_id)
        result.append(
            HolderIdle(
                account_public_id=str(account.public_id) if account else None,
                kind=account.kind if account else "",
                name=(
                    (account.organisation.legal_name if account.organisation_id else "")
                    or (account.user.email if account.user_id else "")
                )
                if account
                else "",
                held_seconds=held_seconds,
                idle_held_seconds=idle_seconds,
            )
        )
    return result


# --- Top consumers (the ledger) -------------------------------------------------------------


@dataclass(frozen=True)
class Consumer:
    account_public_id: str
    kind: str
    name: str
    used_credit_seconds: int


def top_consumers(*, month: dt.date | None = None, limit: int = 10) -> list[Consumer]:
    """The holder accounts that used the most GPU time in the month: their usage roll-ups of
    the month (one per lot rate) summed and ranked. One query."""
    month = month or this_month()
    rows = (
        month_rollups(month, month)
        .filter(kind=K.USAGE)
        .values(
            "account_id",
            "account__public_id",
            "account__kind",
            "account__organisation__legal_name",
            "account__user__email",
        )
        .annotate(used=-Sum("amount"))
        .order_by("-used", "account_id")[:limit]
    )
    return [
        Consumer(
            account_public_id=str(row["account__public_id"]),
            kind=row["account__kind"],
            name=row["account__organisation__legal_name"] or row["account__user__email"] or "",
            used_credit_seconds=row["used"],
        )
        for row in rows
    ]
