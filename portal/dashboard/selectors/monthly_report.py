"""The printable monthly report: the month's totals, who used GPUs, the top organisations, the
month by sector and by province, and the applications decided (see `reports` for the figures'
definitions)."""

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count

from portal.credits.models import (
    ApplicationEvent,
    ApplicationState,
    CreditAccount,
    CreditApplication,
    ProgrammeRollup,
    RollupDimension,
    RollupPeriod,
)
from portal.credits.selectors import QUEUE_STATES

from .figures import K, month_rollups
from .reports import (
    Dimension,
    Report,
    ReportRow,
    month_range_bounds,
    organisations_ranked_by_usage,
    report_build,
    top_organisations,
)


@dataclass(frozen=True)
class ActiveHolders:
    """Holders that were charged GPU time in the months."""

    organisations: int
    students: int


def active_students(*, month: dt.date) -> int:
    """Students charged GPU time in the month. The programme's roll-up of the month counts the
    students behind each lot rate: with a single rate (their usage draws on their allowance, as
    a rule) that is the count, read from one row. With several, a student that used lots at two
    rates is in two rows, so their usage roll-ups of the month are counted instead."""
    per_rate = list(
        ProgrammeRollup.objects.filter(
            period=RollupPeriod.MONTH,
            dimension=RollupDimension.PROGRAMME,
            starts=month,
            kind=K.USAGE,
            holder_kind=CreditAccount.Kind.STUDENT,
        ).values_list("holders", flat=True)
    )
    if len(per_rate) <= 1:
        return sum(per_rate)
    used = month_rollups(month, month).filter(
        kind=K.USAGE, account__kind=CreditAccount.Kind.STUDENT
    )
    return used.values("account_id").distinct().count()


TOP_ORGANISATIONS = 10

DECIDED_STATES = [
    ApplicationState.APPROVED,
    ApplicationState.PARTIALLY_APPROVED,
    ApplicationState.REJECTED,
]


@dataclass(frozen=True)
class Decisions:
    """Applications decided in the months, and how long they waited for the programme."""

    approved: int
    partially_approved: int
    rejected: int
    median_days_waiting: Decimal | None

    @property
    def total(self) -> int:
        return self.approved + self.partially_approved + self.rejected


def _waiting(events: list[tuple[str, dt.datetime]]) -> dt.timedelta:
    """Time spent with the programme (submitted or in review) before the decision: time the
    applicant held it, after changes were requested, does not count."""
    waited, since = dt.timedelta(0), None
    for to_state, at in events:
        if since is not None:
            waited += at - since
            since = None
        if to_state in QUEUE_STATES:
            since = at
        if to_state in DECIDED_STATES:
            break
    return waited


def applications_decided(*, month_from: dt.date, month_to: dt.date) -> Decisions:
    """Approved, partially approved and rejected applications whose decision fell in the months,
    and the median of their days waiting (see `_waiting`). Two queries."""
    start, end = month_range_bounds(month_from, month_to)
    decided = CreditApplication.objects.filter(
        decided_at__gte=start, decided_at__lt=end, state__in=DECIDED_STATES
    )
    counts = dict(decided.values("state").annotate(n=Count("pk")).values_list("state", "n"))
    events: dict[int, list] = defaultdict(list)
    for application_id, to_state, at in (
        ApplicationEvent.objects.filter(application__in=decided)
        .exclude(to_state="")
        .order_by("application_id", "created_at", "pk")
        .values_list("application_id", "to_state", "created_at")
    ):
        events[application_id].append((to_state, at))
    waits = [_waiting(history) for history in events.values()]
    median = None
    if waits:
        middle = statistics.median(sorted(waits))
        microseconds = (middle.days * 86_400 + middle.seconds) * 1_000_000 + middle.microseconds
        median = (Decimal(microseconds) / 86_400_000_000).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )
    return Decisions(
        approved=counts.get(ApplicationState.APPROVED, 0),
        partially_approved=counts.get(ApplicationState.PARTIALLY_APPROVED, 0),
        rejected=counts.get(ApplicationState.REJECTED, 0),
        median_days_waiting=median,
    )


@dataclass
class MonthlyReport:
    """The month on one printable page: every figure comes from the selectors above."""

    month: dt.date
    total: ReportRow
    as_of: dt.datetime | None  # the programme roll-ups' last refresh, for the current month
    active: ActiveHolders
    top_organisations: list[ReportRow]
    by_sector: Report
    by_province: Report
    decisions: Decisions


def monthly_report(*, month: dt.date) -> MonthlyReport:
    # Every organisation charged in the month, most used first: the top ten, and how many.
    ranked = organisations_ranked_by_usage(month_from=month, month_to=month)
    """Eight or nine queries whatever the size of the programme: the programme's roll-ups of
    the month (its totals, by sector, by province, the students who used GPUs), the accounts'
    (the organisations by usage, the top ten's figures; the students who used GPUs when they
    did at several rates) and the applications decided."""
    by_sector = report_build(dimension=Dimension.SECTOR, month_from=month, month_to=month)
    return MonthlyReport(
        month=month,
        total=by_sector.total,  # every report's totals are the whole ledger's
        as_of=by_sector.as_of,
        active=ActiveHolders(organisations=len(ranked), students=active_students(month=month)),
        top_organisations=top_organisations(
            ranked=ranked[:TOP_ORGANISATIONS], month_from=month, month_to=month
        ),
        by_sector=by_sector,
        by_province=report_build(dimension=Dimension.PROVINCE, month_from=month, month_to=month),
        decisions=applications_decided(month_from=month, month_to=month),
    )
