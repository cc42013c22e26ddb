"""The overview: people and applications, credits this month, the sandbox queue and the
cluster now."""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.credits.models import (
    CreditApplication,
    ProgrammeRollup,
    ProgrammeRollupRefresh,
    RollupDimension,
    RollupPeriod,
)
from portal.credits.selectors import QUEUE_STATES
from portal.credits.units import month_bounds
from portal.onboarding.models import Cohort, StudentProfile
from portal.organisations.models import Membership, Organisation
from sandboxes.gpus.models import GpuDevice
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.models import SandboxRun

from .figures import K, holders_counted, local_midnight, this_month

GRANTED_KINDS = [K.GRANT, K.ALLOWANCE]
DAY_SECONDS = 86400


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


# --- Credits this month (the ledger's roll-ups) ----------------------------------------------


@dataclass(frozen=True)
class LedgerMonth:
    month: dt.date
    granted_credit_seconds: int  # grants and student allowances credited to holders
    used_credit_seconds: int  # usage charged to holders (a positive number)
    used_by_day: dict[dt.date, int]  # the same, per local day
    organisations_using: int  # holders with a sandbox run (allocated time) in the month
    students_using: int
    as_of: dt.datetime | None  # when the programme's roll-ups were last refreshed

    def daily_series(self) -> dict:
        """GPU-hours used per day of the month so far (a chart): {"t": [local midnights, epoch
        seconds], "gpu_hours": [...]}."""
        _start, end = month_bounds(self.month)
        tz = timezone.get_default_timezone()
        last = min(timezone.localdate(), (end - dt.timedelta(seconds=1)).astimezone(tz).date())
        series: dict = {"t": [], "gpu_hours": []}
        day = self.month
        while day <= last:
            series["t"].append(int(local_midnight(day).timestamp()))
            series["gpu_hours"].append(round(self.used_by_day.get(day, 0) / 3600, 2))
            day += dt.timedelta(days=1)
        return series


def ledger_month(*, month: dt.date | None = None) -> LedgerMonth:
    """What holders were granted and used in the month, and how many used GPUs: three queries.

    Granted and used are the programme's roll-ups (`credits.models.ProgrammeRollup`): the
    month's row per kind, holder kind and lot rate, and the days' usage rows for the chart,
    as of their last refresh (a minute old at most), which the page prints. A few dozen rows
    whatever the number of holders or charges.
    """
    month = month or this_month()
    start, end = month_bounds(month)
    programme = ProgrammeRollup.objects.filter(dimension=RollupDimension.PROGRAMME)
    used_by_day = dict(
        programme.filter(
            period=RollupPeriod.DAY, starts__gte=month, starts__lt=end.date(), kind=K.USAGE
        )
        .values("starts")
        .annotate(seconds=-Sum("amount"))
        .order_by()
        .values_list("starts", "seconds")
    )
    # The month's refresh, with what it found granted (no row before the first refresh).
    granted = Subquery(
        programme.filter(
            period=RollupPeriod.MONTH, starts=OuterRef("starts"), kind__in=GRANTED_KINDS
        )
        .values("period")
        .annotate(total=Sum("amount"))
        .values("total")[:1],
        output_field=BigIntegerField(),
    )
    refresh = (
        ProgrammeRollupRefresh.objects.filter(period=RollupPeriod.MONTH, starts=month)
        .annotate(granted=Coalesce(granted, Value(0)))
        .values("refreshed_at", "granted")
        .first()
    ) or {"refreshed_at": None, "granted": 0}
    holders = (
        SandboxRun.objects.filter(started_at__lt=end)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=start))
        .aggregate(**holders_counted("account"))
    )
    return LedgerMonth(
        month=month,
        granted_credit_seconds=refresh["granted"],
        used_credit_seconds=sum(used_by_day.values()),
        used_by_day=used_by_day,
        organisations_using=holders["organisations"],
        students_using=holders["students"],
        as_of=refresh["refreshed_at"],
    )


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
