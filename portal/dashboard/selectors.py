"""Figures for the programme pages.

Every figure is one aggregate query (or a fixed few), whatever the number of organisations,
students, ledger entries or samples: the pages' query counts do not grow with the programme.

Where the numbers come from:

- Credits are the ledger's: entries on holder accounts (organisations' and students'), in the
  month as `credits.units.month_bounds` draws it (Pakistan time), so they match statements.
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
from django.contrib.auth import get_user_model
from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    F,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from portal.credits.models import (
    CreditAccount,
    CreditApplication,
    LedgerEntry,
    LedgerTransaction,
)
from portal.credits.selectors import QUEUE_STATES
from portal.credits.units import month_bounds
from portal.onboarding.models import Cohort, StudentProfile
from portal.organisations.models import Membership, Organisation
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.models import DeviceRollup, SandboxRun

K = LedgerTransaction.Kind
HOLDER_KINDS = [CreditAccount.Kind.ORGANISATION, CreditAccount.Kind.STUDENT]
GRANTED_KINDS = [K.GRANT, K.ALLOWANCE]
HOUR = dt.timedelta(hours=1)
DAY_SECONDS = 86400


def _local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=timezone.get_default_timezone())


def _this_month() -> dt.date:
    return timezone.localdate().replace(day=1)


# --- People and applications ----------------------------------------------------------------


@dataclass(frozen=True)
class ProgrammeOverview:
    organisations: int
    organisations_suspended: int
    students: int
    pending_onboarding: int
    cohorts: int
    applications_waiting: int
    oldest_waiting_days: int | None
    median_waiting_days: float | None
    applications_overdue: int
    review_sla_days: int


def users_pending_onboarding() -> QuerySet:
    """People who signed up but are neither in an organisation nor a student nor staff."""
    User = get_user_model()
    return (
        User.objects.filter(is_active=True, is_staff=False)
        .exclude(Exists(Membership.objects.filter(user=OuterRef("pk"))))
        .exclude(Exists(StudentProfile.objects.filter(user=OuterRef("pk"))))
    )


@dataclass(frozen=True)
class WaitingApplications:
    """Applications waiting for a decision, and for how long since they were submitted."""

    count: int
    oldest_days: int | None
    median_days: float | None
    overdue: int  # waiting longer than the service level
    sla_days: int


def applications_waiting(*, now: dt.datetime | None = None) -> WaitingApplications:
    """Two queries: the count, the oldest and the overdue in one; the median's one or two
    middle rows by the (state, submitted_at) index."""
    now = now or timezone.now()
    sla_days = settings.CREDITS_REVIEW_SLA_DAYS
    waiting = CreditApplication.objects.filter(state__in=QUEUE_STATES, submitted_at__isnull=False)
    row = waiting.aggregate(
        count=Count("pk"),
        oldest=Min("submitted_at"),
        overdue=Count("pk", filter=Q(submitted_at__lt=now - dt.timedelta(days=sla_days))),
    )
    count, median = row["count"], None
    if count:
        middle = waiting.order_by("submitted_at", "pk").values_list("submitted_at", flat=True)
        waits = [(now - at).total_seconds() for at in middle[(count - 1) // 2 : count // 2 + 1]]
        median = round(sum(waits) / len(waits) / DAY_SECONDS, 1)
    return WaitingApplications(
        count=count,
        oldest_days=(now - row["oldest"]).days if row["oldest"] else None,
        median_days=median,
        overdue=row["overdue"],
        sla_days=sla_days,
    )


def programme_overview() -> ProgrammeOverview:
    organisations = Organisation.objects.aggregate(
        active=Count("pk", filter=Q(is_active=True)),
        suspended=Count("pk", filter=Q(is_active=False)),
    )
    waiting = applications_waiting()
    return ProgrammeOverview(
        applications_waiting=waiting.count,
        oldest_waiting_days=waiting.oldest_days,
        median_waiting_days=waiting.median_days,
        applications_overdue=waiting.overdue,
        review_sla_days=waiting.sla_days,
        organisations=organisations["active"],
        organisations_suspended=organisations["suspended"],
        students=StudentProfile.objects.filter(user__is_active=True).count(),
        pending_onboarding=users_pending_onboarding().count(),
        cohorts=Cohort.objects.count(),
    )


def recent_organisations(limit: int = 10) -> QuerySet[Organisation]:
    return Organisation.objects.order_by("-created_at")[:limit]


def recent_students(limit: int = 10) -> QuerySet[StudentProfile]:
    return StudentProfile.objects.select_related("user", "university", "cohort").order_by(
        "-created_at"
    )[:limit]


def queue_waiting_days(*, applications, now: dt.datetime | None = None) -> list:
    """Mark each application of a page with `days_waiting` (whole days since submission, for
    those waiting for a decision; None for the others) and `overdue` (waiting longer than the
    service level). No query."""
    now = now or timezone.now()
    sla = dt.timedelta(days=settings.CREDITS_REVIEW_SLA_DAYS)
    marked = []
    for application in applications:
        waiting = application.submitted_at and application.state in QUEUE_STATES
        application.days_waiting = (now - application.submitted_at).days if waiting else None
        application.overdue = bool(waiting and now - application.submitted_at > sla)
        marked.append(application)
    return marked


# --- Credits this month (the ledger) --------------------------------------------------------


def holder_entries(start: dt.datetime, end: dt.datetime) -> QuerySet[LedgerEntry]:
    """Ledger entries of organisations' and students' accounts in [start, end): the system
    accounts are the other side of the same transactions and would count everything twice."""
    return LedgerEntry.objects.filter(
        account__kind__in=HOLDER_KINDS, created_at__gte=start, created_at__lt=end
    )


def used_between(account_ref: str, start: dt.datetime, end: dt.datetime | None = None) -> Coalesce:
    """GPU time charged to the outer row's credit account (`account_ref`, an OuterRef path to
    its id) from `start` to `end` (open-ended without one), as a positive number of
    credit-seconds: a correlated sum on the (account, created_at) index, 0 without any."""
    entries = LedgerEntry.objects.filter(
        account_id=OuterRef(account_ref), created_at__gte=start, transaction__kind=K.USAGE
    )
    if end is not None:
        entries = entries.filter(created_at__lt=end)
    used = entries.order_by().values("account_id").annotate(used=-Sum("amount")).values("used")
    return Coalesce(Subquery(used[:1], output_field=BigIntegerField()), Value(0))


def holders_counted(account: str) -> dict:
    """Aggregates counting the distinct organisations' and students' accounts named by the
    relation `account` (as `organisations` and `students`)."""
    kinds = {
        "organisations": CreditAccount.Kind.ORGANISATION,
        "students": CreditAccount.Kind.STUDENT,
    }
    return {
        name: Count(account, distinct=True, filter=Q(**{f"{account}__kind": kind}))
        for name, kind in kinds.items()
    }


@dataclass(frozen=True)
class LedgerMonth:
    month: dt.date
    granted_credit_seconds: int  # grants and student allowances credited to holders
    used_credit_seconds: int  # usage charged to holders (a positive number)
    used_by_day: dict[dt.date, int]  # the same, per local day
    organisations_using: int  # holders with a sandbox run (allocated time) in the month
    students_using: int

    def daily_series(self) -> dict:
        """GPU-hours used per day of the month so far (a chart): {"t": [local midnights, epoch
        seconds], "gpu_hours": [...]}."""
        _start, end = month_bounds(self.month)
        tz = timezone.get_default_timezone()
        last = min(timezone.localdate(), (end - dt.timedelta(seconds=1)).astimezone(tz).date())
        series: dict = {"t": [], "gpu_hours": []}
        day = self.month
        while day <= last:
            series["t"].append(int(_local_midnight(day).timestamp()))
            series["gpu_hours"].append(round(self.used_by_day.get(day, 0) / 3600, 2))
            day += dt.timedelta(days=1)
        return series


def ledger_month(*, month: dt.date | None = None) -> LedgerMonth:
    """What holders were granted and used in the month, and how many used GPUs: three queries.

    The sums are read from the system side of the same transactions. Every grant and allowance
    is one balanced transaction between a holder and the grants-issued account, every usage
    charge one between a holder (one leg per lot drawn) and the usage account, so the system
    leg's amount is exactly the holder legs' (negated). The system account's entries of the
    month are one range of the (account, created_at) index, where the holders' would be a scan
    of the month's entries joined to their transactions: at a million charges a month, about
    half a second instead of several (tests check the two agree).
    """
    month = month or _this_month()
    start, end = month_bounds(month)
    tz = timezone.get_default_timezone()
    in_month = {"created_at__gte": start, "created_at__lt": end}
    used_by_day = {
        row["day"]: row["seconds"]
        for row in LedgerEntry.objects.filter(
            account__system_code=CreditAccount.System.USAGE, **in_month
        )
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(seconds=Sum("amount"))
        .order_by()
    }
    granted = LedgerEntry.objects.filter(
        account__system_code=CreditAccount.System.GRANTS_ISSUED,
        transaction__kind__in=GRANTED_KINDS,
        **in_month,
    ).aggregate(total=Sum("amount"))["total"]
    holders = (
        SandboxRun.objects.filter(started_at__lt=end)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=start))
        .aggregate(**holders_counted("account"))
    )
    return LedgerMonth(
        month=month,
        granted_credit_seconds=-(granted or 0),
        used_credit_seconds=sum(used_by_day.values()),
        used_by_day=used_by_day,
        organisations_using=holders["organisations"],
        students_using=holders["students"],
    )


@dataclass(frozen=True)
class Consumer:
    account_public_id: str
    kind: str
    name: str
    used_credit_seconds: int


def top_consumers(*, month: dt.date | None = None, limit: int = 10) -> list[Consumer]:
    """The holder accounts that used the most GPU time in the month (ledger usage). One query."""
    month = month or _this_month()
    start, end = month_bounds(month)
    rows = (
        holder_entries(start, end)
        .filter(transaction__kind=K.USAGE)
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


# --- The sandbox queue and the cluster now --------------------------------------------------


@dataclass(frozen=True)
class SandboxQueue:
    length: int
    oldest_queued_at: dt.datetime | None


def sandbox_queue() -> SandboxQueue:
    """Sandboxes waiting for a GPU (one query, on the queue's partial index)."""
    row = Sandbox.objects.filter(status=Sandbox.Status.QUEUED).aggregate(
        length=Count("pk"), oldest=Min("queued_at")
    )
    return SandboxQueue(length=row["length"], oldest_queued_at=row["oldest"])


@dataclass(frozen=True)
class ClusterNow:
    gpus: int
    held: int
    held_util_pct: float | None  # average utilisation of the held GPUs, latest readings
    unhealthy: int


def cluster_now(*, snapshot: dict) -> ClusterNow:
    """The overview's tile, from `metering.selectors.cluster_snapshot` (no query of its own)."""
    tiles = snapshot["gpus"]
    held = [tile for tile in tiles if tile["holder"]]
    readings = [tile["util_pct"] for tile in held if tile["util_pct"] is not None]
    return ClusterNow(
        gpus=len(tiles),
        held=len(held),
        held_util_pct=round(sum(readings) / len(readings), 1) if readings else None,
        unhealthy=sum(1 for tile in tiles if tile["health"] != GpuDevice.Health.HEALTHY),
    )


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
        return _local_midnight(self.days[0])

    @property
    def series(self) -> dict:
        """The cluster's days as a chart: GPU-hours held and held while idle."""
        return {
            "t": [int(_local_midnight(day).timestamp()) for day in self.days],
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
    start, end = _local_midnight(dates[0]), _local_midnight(today + dt.timedelta(days=1))
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


# --- Cohorts --------------------------------------------------------------------------------


def cohorts_list() -> QuerySet[Cohort]:
    return (
        Cohort.objects.select_related("university")
        .annotate(joined=Count("students"))
        .order_by("-created_at")
    )


def cohort_members(*, cohort: Cohort, month: dt.date | None = None) -> QuerySet[StudentProfile]:
    """The cohort's students, newest first, each with `used_credit_seconds` this month (a
    correlated sum per row on the (account, created_at) index: a page of rows, one query)."""
    month = month or _this_month()
    return (
        StudentProfile.objects.filter(cohort=cohort)
        .select_related("user", "university")
        .annotate(
            used_credit_seconds=used_between("user__credit_account__id", *month_bounds(month))
        )
        .order_by("-created_at", "-pk")
    )
