"""Programme reports: what the programme granted and what was done with it, read from the ledger.

A report is a dimension (organisation, sector, province, university, cohort or month) and a range
of whole months in Pakistan time (`units.month_bounds`: from the first instant of the first month
to the first instant of the month after the last). Its rows are the dimension's values; every row
and the totals row carry the same six figures, each in exact credit-seconds and exact PKR.

Definitions. Only the entries of *holder* accounts (organisations' and students') count, with
their `created_at` inside the range; the system accounts are the other side of the same
transactions and would count everything twice:

- **issued**: the sum of the holder entries of `grant` and `allowance` transactions (new lots from
  approved applications and monthly student allowances). Always ≥ 0.
- **adjusted**: the signed sum of the holder entries of `adjustment` transactions (a manual lot
  added is positive, credits taken back by hand are negative).
- **used**: minus the sum of the holder entries of `usage` transactions (GPU time charged).
- **expired**: minus the sum of the holder entries of `expiry` transactions (the unused rest of
  lots that passed their date).
- **revoked**: minus the sum of the holder entries of `revocation` transactions (the unused rest
  of lots a programme manager took back).
- **net** = issued + adjusted − used − expired − revoked: the sum of every holder entry in the
  range, that is how much the holders' balances grew over it.

PKR is each entry at its own lot's `rate_pkr_per_gpu_hour` (every holder entry names its lot).
The database sums the credit-seconds per (dimension value, lot rate); Python multiplies those
few sums by their rate and adds them up, exactly (see `Amount`), and `units.credit_seconds_to_pkr`
divides by the hour once, when a figure is read; rounding happens only on display. A report is
one query whatever the number of entries, and works the same on SQLite, where the database's
own decimal arithmetic would not be exact.

Every report covers every holder account, so its totals are the same whatever the dimension:
holders a dimension does not describe are one row of their own (students in an organisation
report, organisations in a university report), as are students without a listed university or
cohort.
"""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Q, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.credits.models import CreditAccount, LedgerTransaction
from portal.credits.units import credit_seconds_to_gpu_hours, credit_seconds_to_pkr, month_bounds
from portal.organisations.models import Province, Sector

from .figures import holder_entries

K = LedgerTransaction.Kind
MAX_MONTHS = 120  # ten years in one report: the month table stays readable


class Dimension:
    ORGANISATION = "organisation"
    SECTOR = "sector"
    PROVINCE = "province"
    UNIVERSITY = "university"
    COHORT = "cohort"
    MONTH = "month"

    choices = [
        (MONTH, _("Month")),
        (ORGANISATION, _("Organisation")),
        (SECTOR, _("Sector")),
        (PROVINCE, _("Province")),
        (UNIVERSITY, _("University")),
        (COHORT, _("Cohort")),
    ]
    values = [value for value, _label in choices]


# measure: (transaction kinds whose holder entries it sums, sign that makes it read positive)
MEASURES: dict[str, tuple[list[str], int]] = {
    "issued": ([K.GRANT, K.ALLOWANCE], 1),
    "adjusted": ([K.ADJUSTMENT], 1),
    "used": ([K.USAGE], -1),
    "expired": ([K.EXPIRY], -1),
    "revoked": ([K.REVOCATION], -1),
}
MEASURE_LABELS = {
    "issued": _("Granted"),
    "adjusted": _("Adjusted"),
    "used": _("Used"),
    "expired": _("Expired"),
    "revoked": _("Revoked"),
    "net": _("Net change"),
}
FIGURES = [*MEASURES, "net"]


@dataclass(frozen=True)
class Amount:
    """Credit-seconds and their value. `pkr_seconds` is the sum of credit-seconds × the PKR per
    GPU-hour of each one's lot: integers times two-place rates, so exact, and the same whatever
    the grouping; it becomes PKR by one division, when read."""

    credit_seconds: int = 0
    pkr_seconds: Decimal = Decimal(0)

    def __add__(self, other: "Amount") -> "Amount":
        return Amount(
            self.credit_seconds + other.credit_seconds, self.pkr_seconds + other.pkr_seconds
        )

    def __neg__(self) -> "Amount":
        return Amount(-self.credit_seconds, -self.pkr_seconds)

    @property
    def gpu_hours(self) -> Decimal:
        return credit_seconds_to_gpu_hours(self.credit_seconds)

    @property
    def pkr(self) -> Decimal:
        return credit_seconds_to_pkr(1, self.pkr_seconds)  # (Σ seconds × rate) / 3600


@dataclass
class ReportRow:
    """One value of the dimension (or the totals), with its figures."""

    key: str
    label: str
    issued: Amount = field(default_factory=Amount)
    adjusted: Amount = field(default_factory=Amount)
    used: Amount = field(default_factory=Amount)
    expired: Amount = field(default_factory=Amount)
    revoked: Amount = field(default_factory=Amount)
    month: dt.date | None = None  # the month dimension's rows name their month

    @property
    def net(self) -> Amount:
        return self.issued + self.adjusted + -self.used + -self.expired + -self.revoked

    def figures(self) -> list[tuple[str, Amount]]:
        return [(name, getattr(self, name)) for name in FIGURES]

    def labelled_figures(self) -> list[tuple[str, str, Amount]]:
        return [(name, MEASURE_LABELS[name], getattr(self, name)) for name in FIGURES]

    def add(self, other: "ReportRow") -> None:
        for name in MEASURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Report:
    dimension: str
    month_from: dt.date
    month_to: dt.date
    rows: list[ReportRow]
    total: ReportRow

    @property
    def dimension_label(self) -> str:
        return dict(Dimension.choices)[self.dimension]


def month_range_bounds(month_from: dt.date, month_to: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """From the first instant of the first month to the first instant after the last one."""
    return month_bounds(month_from)[0], month_bounds(month_to)[1]


def months_between(month_from: dt.date, month_to: dt.date) -> list[dt.date]:
    months, cursor = [], month_from.replace(day=1)
    while cursor <= month_to:
        months.append(cursor)
        cursor = (cursor + dt.timedelta(days=32)).replace(day=1)
    return months


def holder_entries_between(month_from: dt.date, month_to: dt.date):
    return holder_entries(*month_range_bounds(month_from, month_to))


def _measure_sums() -> dict:
    return {
        name: Sum("amount", filter=Q(transaction__kind__in=kinds), default=0)
        for name, (kinds, _sign) in MEASURES.items()
    }


RATE = "grant__rate_pkr_per_gpu_hour"

# The columns each dimension groups by (besides the lot's rate), and how a grouped row is named.
_GROUPS = {
    Dimension.ORGANISATION: [
        "account__kind",
        "account__organisation__public_id",
        "account__organisation__legal_name",
    ],
    Dimension.SECTOR: ["account__kind", "account__organisation__sector"],
    Dimension.PROVINCE: ["account__kind", "account__organisation__province"],
    Dimension.UNIVERSITY: [
        "account__kind",
        "account__user__student_profile__university__name",
    ],
    Dimension.COHORT: [
        "account__kind",
        "account__user__student_profile__cohort__public_id",
        "account__user__student_profile__cohort__name",
    ],
    Dimension.MONTH: ["local_month"],
}

# Holders a dimension does not describe: rows of their own, after the others, in this order.
STUDENTS, ORGANISATIONS, NONE = "~students", "~organisations", "~none"
_CATCH_ALL_ORDER = {STUDENTS: 1, ORGANISATIONS: 2, NONE: 3}


def _row_identity(dimension: str, values: dict) -> tuple[str, str, dt.date | None]:
    """(key, label, month) of a grouped database row. Keys of catch-all rows start with "~"."""
    if dimension == Dimension.MONTH:
        local = values["local_month"].astimezone(timezone.get_default_timezone())
        month = local.date().replace(day=1)
        return f"{month:%Y-%m}", f"{month:%Y-%m}", month
    is_student = values["account__kind"] == CreditAccount.Kind.STUDENT
    if dimension in (Dimension.ORGANISATION, Dimension.SECTOR, Dimension.PROVINCE):
        if is_student:
            return STUDENTS, str(_("Students")), None
        if dimension == Dimension.ORGANISATION:
            return (
                str(values["account__organisation__public_id"]),
                values["account__organisation__legal_name"],
                None,
            )
        code = values[_GROUPS[dimension][1]]
        labels = dict(Sector.choices if dimension == Dimension.SECTOR else Province.choices)
        return code, str(labels.get(code, code)), None
    if not is_student:
        return ORGANISATIONS, str(_("Organisations (startups)")), None
    if dimension == Dimension.UNIVERSITY:
        name = values["account__user__student_profile__university__name"]
        if name is None:
            return NONE, str(_("Students without a listed university")), None
        return f"university:{name}", name, None
    cohort = values["account__user__student_profile__cohort__public_id"]
    if cohort is None:
        return NONE, str(_("Students without a cohort")), None
    return str(cohort), values["account__user__student_profile__cohort__name"], None


def _rows_from(dimension: str, grouped) -> dict[str, ReportRow]:
    """Fold the database's (dimension value, lot rate) sums into one row per dimension value."""
    rows: dict[str, ReportRow] = {}
    for values in grouped:
        key, label, month = _row_identity(dimension, values)
        row = rows.get(key)
        if row is None:
            row = rows[key] = ReportRow(key=key, label=label, month=month)
        rate = values[RATE] or Decimal(0)
        for name, (_kinds, sign) in MEASURES.items():
            seconds = sign * values[name]
            if seconds:
                amount = Amount(seconds, seconds * rate)
                setattr(row, name, getattr(row, name) + amount)
    return rows


def _by_name(row: ReportRow) -> tuple:
    return (_CATCH_ALL_ORDER.get(row.key, 0), row.label.casefold(), row.key)


def report_build(*, dimension: str, month_from: dt.date, month_to: dt.date) -> Report:
    """The report for a dimension over whole months, in one query (see the module docstring)."""
    if dimension not in Dimension.values:
        raise ValueError(f"unknown dimension {dimension!r}")
    entries = holder_entries_between(month_from, month_to)
    if dimension == Dimension.MONTH:
        entries = entries.annotate(
            local_month=TruncMonth("created_at", tzinfo=timezone.get_default_timezone())
        )
    grouped = entries.values(*_GROUPS[dimension], RATE).annotate(**_measure_sums()).order_by()
    by_key = _rows_from(dimension, grouped)
    if dimension == Dimension.MONTH:
        rows = [
            by_key.get(f"{m:%Y-%m}") or ReportRow(key=f"{m:%Y-%m}", label=f"{m:%Y-%m}", month=m)
            for m in months_between(month_from, month_to)
        ]
    else:
        rows = sorted(by_key.values(), key=_by_name)
    total = ReportRow(key="total", label=str(_("Total")))
    for row in rows:
        total.add(row)
    return Report(
        dimension=dimension, month_from=month_from, month_to=month_to, rows=rows, total=total
    )


def top_organisations_by_usage(
    *, month_from: dt.date, month_to: dt.date, limit: int = 10
) -> list[ReportRow]:
    """The organisations that used the most GPU time over the months, biggest first. Two
    queries: the ranking (in the database), then the figures of the ones ranked."""
    entries = holder_entries_between(month_from, month_to).filter(
        account__kind=CreditAccount.Kind.ORGANISATION
    )
    ranked = list(
        entries.filter(transaction__kind=K.USAGE)
        .values("account__organisation_id")
        .annotate(used=Sum("amount"))
        .order_by("used", "account__organisation_id")  # usage entries are negative
        .values_list("account__organisation_id", flat=True)[:limit]
    )
    if not ranked:
        return []
    grouped = (
        entries.filter(account__organisation_id__in=ranked)
        .values(*_GROUPS[Dimension.ORGANISATION], RATE)
        .annotate(**_measure_sums())
        .order_by()
    )
    rows = list(_rows_from(Dimension.ORGANISATION, grouped).values())
    return sorted(rows, key=lambda r: (-r.used.credit_seconds, r.label.casefold()))
