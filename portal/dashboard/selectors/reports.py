"""Programme reports: what the programme granted and what was done with it, read from the ledger's
roll-ups.

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

Where they are read. The entries are summed once, when they are written or soon after
(`credits.models`): per holder account, month, kind and lot rate (AccountRollup, in the postings'
transaction), and per month, dimension value, holder kind, kind and rate over the whole programme
(ProgrammeRollup, rebuilt from the accounts' every CREDITS_ROLLUP_REFRESH_SECONDS; a holder counts
under the sector, province, university or cohort it has at the refresh). A report reads a few
rows per month and dimension value, never the entries: its cost is the same for a programme of a
hundred holders or of sixty thousand. The organisation dimension has a row per organisation, so
it is read a page at a time (`organisation_rows`), or streamed (`organisation_rows_all`); its
totals, like every other report's, come from the programme's roll-ups. The current month's
programme figures are as of their last refresh (`figures.refreshed_at`), a minute old at most.

PKR is each entry at its own lot's `rate_pkr_per_gpu_hour` (every holder entry names its lot,
and the roll-ups keep the rate). The database sums the credit-seconds per (dimension value, lot
rate); Python multiplies those few sums by their rate and adds them up, exactly (see `Amount`),
and `units.credit_seconds_to_pkr` divides by the hour once, when a figure is read; rounding
happens only on display. It works the same on SQLite, where the database's own decimal arithmetic
would not be exact.

Every report covers every holder account, so its totals are the same whatever the dimension:
holders a dimension does not describe are one row of their own (students in an organisation
report, organisations in a university report), as are students without a listed university or
cohort.
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Sum
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _

from portal.credits.models import (
    CreditAccount,
    LedgerTransaction,
    ProgrammeRollup,
    RollupDimension,
    RollupPeriod,
)
from portal.credits.units import (
    credit_seconds_to_gpu_hours,
    credit_seconds_to_pkr,
    month_bounds,
    months_between,
)
from portal.onboarding.models import Cohort
from portal.organisations.models import Organisation, Province, Sector

from .figures import month_rollups, refreshed_at_subquery, this_month

K = LedgerTransaction.Kind
MAX_MONTHS = 120  # ten years in one report: the month table stays readable
ORGANISATION_PAGE_SIZE = 200  # organisations on one page of the organisation report
EXPORT_CHUNK = 2000  # roll-up sums an export fetches from the database at a time


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
MEASURE_OF_KIND = {kind: (name, sign) for name, (kinds, sign) in MEASURES.items() for kind in kinds}
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
    as_of: dt.datetime | None = None  # the programme roll-ups' refresh, if this month is in

    @property
    def dimension_label(self) -> str:
        return dict(Dimension.choices)[self.dimension]


def month_range_bounds(month_from: dt.date, month_to: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """From the first instant of the first month to the first instant after the last one."""
    return month_bounds(month_from)[0], month_bounds(month_to)[1]


RATE = "rate_pkr_per_gpu_hour"

# Holders a dimension does not describe: rows of their own, after the others, in this order
# (the keys the programme's roll-ups give them).
STUDENTS, ORGANISATIONS, NONE = "~students", "~organisations", "~none"
_CATCH_ALL_ORDER = {STUDENTS: 1, ORGANISATIONS: 2, NONE: 3}
_CATCH_ALL_LABELS = {
    STUDENTS: _("Students"),
    ORGANISATIONS: _("Organisations (startups)"),
    (Dimension.UNIVERSITY, NONE): _("Students without a listed university"),
    (Dimension.COHORT, NONE): _("Students without a cohort"),
}


def _add(row: ReportRow, kind: str, rate: Decimal, amount: int) -> None:
    """Fold one roll-up sum (credit-seconds of one kind at one rate) into the row's figure."""
    name, sign = MEASURE_OF_KIND[kind]
    seconds = sign * amount
    if seconds:
        setattr(row, name, getattr(row, name) + Amount(seconds, seconds * rate))


def _programme_sums(dimension: str, month_from: dt.date, month_to: dt.date, *by: str) -> list:
    """The programme's month roll-ups of a dimension over the months, summed per `by`, kind
    and rate: a few rows per month and dimension value. When the months include the current
    one, each row also carries `as_of`, its last refresh (read in the same query)."""
    sums = (
        ProgrammeRollup.objects.filter(
            period=RollupPeriod.MONTH,
            dimension=dimension,
            starts__gte=month_from,
            starts__lte=month_to,
        )
        .values(*by, "kind", RATE)
        .annotate(total=Sum("amount"))
        .order_by()
    )
    current = this_month()
    if month_from <= current <= month_to:
        sums = sums.annotate(as_of=refreshed_at_subquery(month=current))
    return list(sums)


def _as_of(sums: list) -> dt.datetime | None:
    return sums[0].get("as_of") if sums else None


def _row_identity(dimension: str, key: str, cohort_names: dict) -> tuple[str, str]:
    """(row key, label) of a programme roll-up's dimension value. Catch-all keys start "~"."""
    if key.startswith("~"):
        label = _CATCH_ALL_LABELS.get(key) or _CATCH_ALL_LABELS[(dimension, key)]
        return key, str(label)
    if dimension == Dimension.SECTOR:
        return key, str(dict(Sector.choices).get(key, key))
    if dimension == Dimension.PROVINCE:
        return key, str(dict(Province.choices).get(key, key))
    if dimension == Dimension.UNIVERSITY:
        return f"university:{key}", key
    return key, cohort_names.get(key, key)


def _by_name(row: ReportRow) -> tuple:
    return (_CATCH_ALL_ORDER.get(row.key, 0), row.label.casefold(), row.key)


def report_build(*, dimension: str, month_from: dt.date, month_to: dt.date) -> Report:
    """The report for a dimension over whole months, from the programme's roll-ups in one query
    (two for cohorts: their names). The organisation dimension's Report has the students' row
    and the totals: its organisations' rows are `organisation_rows`' pages."""
    if dimension not in Dimension.values:
        raise ValueError(f"unknown dimension {dimension!r}")
    if dimension == Dimension.MONTH:
        sums = _programme_sums(RollupDimension.PROGRAMME, month_from, month_to, "starts")
        by_key = {
            f"{m:%Y-%m}": ReportRow(key=f"{m:%Y-%m}", label=f"{m:%Y-%m}", month=m)
            for m in months_between(month_from, month_to)
        }
        for values in sums:
            _add(by_key[f"{values['starts']:%Y-%m}"], values["kind"], values[RATE], values["total"])
        rows = list(by_key.values())
    elif dimension == Dimension.ORGANISATION:
        # The programme's figures by kind of holder: the students' are their row, the
        # organisations' add up to the pages of organisations.
        sums = _programme_sums(RollupDimension.PROGRAMME, month_from, month_to, "holder_kind")
        organisations = ReportRow(key="", label="")
        students = ReportRow(key=STUDENTS, label=str(_CATCH_ALL_LABELS[STUDENTS]))
        for values in sums:
            is_student = values["holder_kind"] == CreditAccount.Kind.STUDENT
            _add(
                students if is_student else organisations,
                values["kind"],
                values[RATE],
                values["total"],
            )
        rows = [students] if any(amount.credit_seconds for _n, amount in students.figures()) else []
        total = ReportRow(key="total", label=str(_("Total")))
        total.add(organisations)
        total.add(students)
        return Report(dimension, month_from, month_to, rows, total, as_of=_as_of(sums))
    else:
        sums = _programme_sums(dimension, month_from, month_to, "key")
        cohort_names = {}
        if dimension == Dimension.COHORT:
            cohort_names = {
                str(public_id): name
                for public_id, name in Cohort.objects.filter(
                    public_id__in=[v["key"] for v in sums if not v["key"].startswith("~")]
                ).values_list("public_id", "name")
            }
        by_key: dict[str, ReportRow] = {}
        for values in sums:
            key, label = _row_identity(dimension, values["key"], cohort_names)
            row = by_key.setdefault(key, ReportRow(key=key, label=label))
            _add(row, values["kind"], values[RATE], values["total"])
        rows = sorted(by_key.values(), key=_by_name)
    total = ReportRow(key="total", label=str(_("Total")))
    for row in rows:
        total.add(row)
    return Report(dimension, month_from, month_to, rows, total, as_of=_as_of(sums))


# --- Organisations: a row each, so a page at a time -----------------------------------------


def _organisations_listed():
    """The organisation report's organisations: every one with a credit account, by name, as
    (public id, name, account id). A sort of the organisations, never a scan of the months'
    books; those without any in the months are rows of zeros."""
    return (
        Organisation.objects.filter(credit_account__isnull=False)
        .order_by(Lower("legal_name"), "pk")
        .values_list("public_id", "legal_name", "credit_account__id")
    )


def _organisation_figures(
    organisations: list[tuple], month_from: dt.date, month_to: dt.date
) -> list[ReportRow]:
    """The report rows of these organisations (public id, name, account id), in their order:
    one query on the accounts' roll-ups (their unique key starts with the account)."""
    rows = {
        account_id: ReportRow(key=str(public_id), label=name)
        for public_id, name, account_id in organisations
    }
    sums = (
        month_rollups(month_from, month_to)
        .filter(account_id__in=list(rows))
        .values("account_id", "kind", RATE)
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for values in sums:
        _add(rows[values["account_id"]], values["kind"], values[RATE], values["total"])
    return list(rows.values())


@dataclass(frozen=True)
class OrganisationPage:
    """One page of the organisation report: its rows by name, and whether more follow."""

    number: int
    rows: list[ReportRow]
    has_next: bool
    first_index: int  # the first row's place in the whole list (from 1)

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def organisation_rows(
    *,
    month_from: dt.date,
    month_to: dt.date,
    page: int = 1,
    page_size: int = ORGANISATION_PAGE_SIZE,
) -> OrganisationPage:
    """Page `page` (from 1) of the organisations, by name, with their figures in the months:
    two queries whatever the number of organisations or of entries. No total count is taken:
    a page knows only whether another follows."""
    if page < 1:
        raise ValueError("pages are numbered from 1")
    offset = (page - 1) * page_size
    listed = list(_organisations_listed()[offset : offset + page_size + 1])
    rows = _organisation_figures(listed[:page_size], month_from, month_to) if listed else []
    return OrganisationPage(
        number=page, rows=rows, has_next=len(listed) > page_size, first_index=offset + 1
    )


def organisation_rows_all(*, month_from: dt.date, month_to: dt.date) -> Iterator[ReportRow]:
    """Every organisation's row, in the pages' order, for an export: two queries read side by
    side as the rows are written out (server-side cursors on PostgreSQL), the organisations and
    their roll-ups' sums in the same order, so the time per row stays the same however many
    organisations there are."""
    sums = (
        month_rollups(month_from, month_to)
        .filter(account__kind=CreditAccount.Kind.ORGANISATION)
        .values("account_id", "kind", RATE)
        .annotate(total=Sum("amount"))
        .order_by(Lower("account__organisation__legal_name"), "account__organisation_id")
        .iterator(chunk_size=EXPORT_CHUNK)
    )
    pending = next(sums, None)
    for public_id, name, account_id in _organisations_listed().iterator(chunk_size=EXPORT_CHUNK):
        row = ReportRow(key=str(public_id), label=name)
        while pending is not None and pending["account_id"] == account_id:
            _add(row, pending["kind"], pending[RATE], pending["total"])
            pending = next(sums, None)
        yield row


def organisations_ranked_by_usage(*, month_from: dt.date, month_to: dt.date) -> list[int]:
    """The credit accounts of every organisation charged GPU time in the months, the most used
    first: their usage roll-ups (one per account, month and lot rate) summed and sorted in the
    database, one query."""
    return list(
        month_rollups(month_from, month_to)
        .filter(kind=K.USAGE, account__kind=CreditAccount.Kind.ORGANISATION)
        .values("account_id")
        .annotate(used=Sum("amount"))
        .order_by("used", "account_id")  # usage is negative
        .values_list("account_id", flat=True)
    )


def top_organisations(
    *, ranked: list[int], month_from: dt.date, month_to: dt.date
) -> list[ReportRow]:
    """The report rows of the organisations whose accounts are `ranked` (most used first, from
    `organisations_ranked_by_usage`), in that order: two queries."""
    if not ranked:
        return []
    organisations = Organisation.objects.filter(credit_account__id__in=ranked).values_list(
        "public_id", "legal_name", "credit_account__id"
    )
    rows = _organisation_figures(list(organisations), month_from, month_to)
    return sorted(rows, key=lambda r: (-r.used.credit_seconds, r.label.casefold()))
