"""Programme reports: every figure equals the ledger, on the page, in the CSV and in the XLSX.

The books are made through the credit services (grants, allowances, usage, expiries,
revocations, adjustments), each at a chosen moment (time-machine), over several months, many
organisations in several sectors and provinces, and students of several universities and
cohorts; then the programme's roll-ups are refreshed, as the beat task does (the reports read
them). The expected figures are recomputed here from the entries one by one, in exact
fractions, with months cut in Pakistan time by zoneinfo rather than by the code under test.
"""

import csv
import datetime as dt
import io
import itertools
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from openpyxl import load_workbook

from portal.credits.models import CreditAccount, CreditGrant, LedgerEntry
from portal.credits.services import (
    account_for_organisation,
    account_for_student,
    adjustment_post,
    grant_expire,
    grant_issue,
    grant_revoke,
    grants_expire_due,
    rollups_refresh,
    usage_charge,
)
from portal.credits.services import applications as application_services
from portal.credits.units import display_gpu_hours, display_pkr
from portal.dashboard.selectors import reports
from portal.dashboard.selectors.reports import Dimension, organisation_rows_all, report_build
from portal.dashboard.views import reports as report_views
from portal.onboarding.allowance import student_allowance_grant
from portal.onboarding.models import StudentProfile
from portal.organisations.models import Role
from tests.factories import (
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UniversityFactory,
)

pytestmark = pytest.mark.django_db

KARACHI = ZoneInfo("Asia/Karachi")
RATES = [Decimal("750.00"), Decimal("640.50"), Decimal("333.33")]
SECTORS = ["health", "agriculture", "finance", "language", "climate"]
PROVINCES = ["punjab", "sindh", "kp", "balochistan"]
# The months the reports cover; the books also hold entries before and after them.
MONTHS = [dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)]
FIGURES = ["issued", "adjusted", "used", "expired", "revoked", "net"]
# How each kind of transaction counts, written out again here rather than imported.
KIND_FIGURE = {
    "grant": ("issued", 1),
    "allowance": ("issued", 1),
    "adjustment": ("adjusted", 1),
    "usage": ("used", -1),
    "expiry": ("expired", -1),
    "revocation": ("revoked", -1),
}


def at(year, month, day, hour=12, minute=0, second=0):
    """A moment in Pakistan time."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=KARACHI)


def travel(moment):
    return time_machine.travel(moment, tick=False)


# --- The books ------------------------------------------------------------------------------


def _lot(account, seconds, rate, expires_at, key):
    return grant_issue(
        account=account,
        credit_seconds=seconds,
        rate_pkr_per_gpu_hour=rate,
        expires_at=expires_at,
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=key,
    )


def _use(account, seconds, key):
    usage_charge(
        account=account,
        credit_seconds=seconds,
        idempotency_key=key,
        metadata={"sandbox": f"sandbox-{key}", "profile": "gpu-1", "run": key},
    )


def make_organisations(count, *, start=0):
    organisations = []
    for i in range(start, start + count):
        organisation = OrganisationFactory(
            sector=SECTORS[i % len(SECTORS)], province=PROVINCES[i % len(PROVINCES)]
        )
        organisations.append((organisation, account_for_organisation(organisation)))
    return organisations


def make_students(manager):
    """Students of two universities and three cohorts, one of them with neither on the list."""
    nust, lums = UniversityFactory(name="NUST"), UniversityFactory(name="LUMS")
    bootcamp = CohortFactory(
        name="AI Bootcamp", university=nust, created_by=manager, monthly_allowance_gpu_hours=12
    )
    hackathon = CohortFactory(name="Hackathon", created_by=manager)
    course = CohortFactory(
        name="Night course", university=lums, created_by=manager, monthly_allowance_gpu_hours=7
    )
    domain = StudentProfile.Route.EMAIL_DOMAIN
    profiles = [
        StudentProfileFactory(route=domain, university=nust, cohort=None),
        StudentProfileFactory(route=domain, university=lums, cohort=None),
        StudentProfileFactory(cohort=bootcamp, university=nust),
        StudentProfileFactory(cohort=bootcamp, university=None, institution="FAST"),
        StudentProfileFactory(cohort=hackathon, university=None, institution="GIKI"),
        StudentProfileFactory(cohort=course, university=lums),
    ]
    return [profile.user for profile in profiles]


def make_books(manager, *, organisations=12):
    """Four months of a programme (December to March, so the reports' range has books on both
    sides), through the services. Amounts are odd so that nothing rounds to a whole hour."""
    orgs = make_organisations(organisations)
    with travel(at(2024, 11, 30, 9)):
        students = make_students(manager)
    for n, (month, (_organisation, account)) in enumerate(
        itertools.product([dt.date(2024, 12, 1), *MONTHS], orgs)
    ):
        i = n % len(orgs)
        y, m = month.year, month.month
        following = (month + dt.timedelta(days=32)).replace(day=1)
        with travel(at(y, m, 2, 10)):
            grant = _lot(
                account,
                40 * 3600 + 7 * i + 1,
                RATES[(n + i) % len(RATES)],
                at(following.year, following.month, 20),
                key=f"grant:{month}:{i}",
            )
        with travel(at(y, m, 10, 15)):
            _use(account, 3 * 3600 + 61 * i + 13, key=f"use:{month}:{i}:a")
        with travel(at(y, m, 27, 23, 59, 59)):
            _use(account, 1800 + i, key=f"use:{month}:{i}:b")
        if i % 3 == 0:
            with travel(at(y, m, 15)):
                adjustment_post(
                    account=account,
                    credit_seconds=2 * 3600 + i,
                    reason="Compensation for an outage",
                    idempotency_key=f"adjust-up:{month}:{i}",
                    acting_user=manager,
                    rate_pkr_per_gpu_hour=RATES[2],
                    expires_at=at(following.year, following.month, 25),
                )
        if i % 4 == 1:
            with travel(at(y, m, 16)):
                adjustment_post(
                    account=account,
                    credit_seconds=-(900 + i),
                    reason="Double charge corrected the other way",
                    idempotency_key=f"adjust-down:{month}:{i}",
                    acting_user=manager,
                )
        if i % 5 == 2:
            with travel(at(y, m, 18)):
                grant_revoke(grant=grant, reason="Project ended", acting_user=manager)
    for month in [dt.date(2024, 12, 1), *MONTHS]:
        y, m = month.year, month.month
        with travel(at(y, m, 1, 0, 30)):
            grants_expire_due()  # last month's allowances and lots
            for student in students:
                student_allowance_grant(user=student, month=month)
        with travel(at(y, m, 21, 9)):
            grants_expire_due()  # lots that ended on the 20th
            for k, student in enumerate(students):
                _use(account_for_student(student), 1200 + 37 * k, key=f"student:{month}:{k}")
    with travel(at(2025, 4, 3)):  # after the range: must not count
        grants_expire_due()
        _use(orgs[0][1], 77, key="april")
    refresh()
    return orgs, students


BOOK_MONTHS = [dt.date(2024, 11, 1), dt.date(2024, 12, 1), *MONTHS, dt.date(2025, 4, 1)]


def refresh():
    """The programme's roll-ups of every month the tests write, as the beat task leaves them."""
    with travel(at(2025, 4, 3, 13)):
        rollups_refresh(months=BOOK_MONTHS)


def every_row(report):
    """A report's rows: the organisation report's organisations are read apart (a page at a
    time on screen, all of them here), before its students' row."""
    if report.dimension != Dimension.ORGANISATION:
        return report.rows
    organisations = organisation_rows_all(month_from=report.month_from, month_to=report.month_to)
    return [*organisations, *report.rows]


# --- The expected figures, from the entries one by one ---------------------------------------


def _key(dimension, entry, local):
    account = entry.account
    organisation = account.organisation
    profile = getattr(account.user, "student_profile", None) if account.user_id else None
    if dimension == Dimension.MONTH:
        return f"{local:%Y-%m}"
    if dimension in (Dimension.ORGANISATION, Dimension.SECTOR, Dimension.PROVINCE):
        if organisation is None:
            return reports.STUDENTS
        return {
            Dimension.ORGANISATION: str(organisation.public_id),
            Dimension.SECTOR: organisation.sector,
            Dimension.PROVINCE: organisation.province,
        }[dimension]
    if organisation is not None:
        return reports.ORGANISATIONS
    if dimension == Dimension.UNIVERSITY:
        return f"university:{profile.university.name}" if profile.university else reports.NONE
    return str(profile.cohort.public_id) if profile.cohort else reports.NONE


def expected(dimension, months=MONTHS):
    """{key: {figure: (credit-seconds, exact PKR as a Fraction)}}, and the totals."""
    wanted = {(m.year, m.month) for m in months}
    rows = defaultdict(lambda: {name: [0, Fraction(0)] for name in FIGURES})
    total = {name: [0, Fraction(0)] for name in FIGURES}
    entries = LedgerEntry.objects.exclude(account__kind=CreditAccount.Kind.SYSTEM).select_related(
        "transaction",
        "grant",
        "account__organisation",
        "account__user__student_profile__university",
        "account__user__student_profile__cohort",
    )
    for entry in entries:
        local = entry.created_at.astimezone(KARACHI)
        if (local.year, local.month) not in wanted:
            continue
        figure, sign = KIND_FIGURE[entry.transaction.kind]
        seconds = sign * entry.amount
        pkr = Fraction(seconds) * Fraction(str(entry.grant.rate_pkr_per_gpu_hour)) / 3600
        for target in (rows[_key(dimension, entry, local)], total):
            for name, factor in ((figure, 1), ("net", sign)):
                target[name][0] += factor * seconds
                target[name][1] += factor * pkr
    return rows, total


def paisa(value: Fraction) -> Decimal:
    """An exact amount rounded half away from zero to the paisa, without Decimal's context."""
    sign = -1 if value < 0 else 1
    cents = int(abs(value) * 100 + Fraction(1, 2))
    return Decimal(sign * cents) / 100


def hours(seconds: int) -> Decimal:
    exact = Fraction(seconds, 3600)
    return paisa(exact)


def assert_row_matches(row, figures, where):
    for name in FIGURES:
        seconds, pkr = figures[name]
        amount = getattr(row, name)
        assert amount.credit_seconds == seconds, (where, name)
        assert Fraction(amount.pkr_seconds) == pkr * 3600, (where, name)  # exact
        assert abs(Fraction(amount.pkr) - pkr) < Fraction(1, 10**15), (where, name)
        assert display_pkr(amount.pkr) == paisa(pkr), (where, name)


# --- The selectors --------------------------------------------------------------------------


def test_every_report_equals_the_ledger(programme_manager):
    # given four months of books made through the services
    make_books(programme_manager)
    totals = None
    for dimension in Dimension.values:
        # when the report is read for January to March
        report = report_build(dimension=dimension, month_from=MONTHS[0], month_to=MONTHS[-1])
        rows, total = expected(dimension)
        # then each row and the totals equal the entries, to the credit-second and the paisa
        by_key = {row.key: row for row in every_row(report)}
        assert set(by_key) >= set(rows), dimension
        for key, row in by_key.items():
            figures = rows.get(key, {name: (0, Fraction(0)) for name in FIGURES})
            assert_row_matches(row, figures, (dimension, key))
        assert_row_matches(report.total, total, (dimension, "total"))
        totals = totals or report.total
        assert report.total == totals  # every dimension covers every holder
    # and the rows are really spread: several of each dimension's values carry figures
    for dimension, least in [
        (Dimension.SECTOR, 1 + len(SECTORS)),
        (Dimension.PROVINCE, 1 + len(PROVINCES)),
        (Dimension.UNIVERSITY, 4),
        (Dimension.COHORT, 5),
        (Dimension.MONTH, 3),
    ]:
        report = report_build(dimension=dimension, month_from=MONTHS[0], month_to=MONTHS[-1])
        assert len([r for r in report.rows if r.used.credit_seconds]) >= least, dimension
    # and every kind of transaction is in the books the test reads
    for name in ["issued", "used", "expired", "revoked"]:
        assert getattr(totals, name).credit_seconds > 0, name
    assert totals.adjusted.credit_seconds != 0


def test_the_totals_equal_the_other_side_of_the_books(programme_manager):
    # given the books
    make_books(programme_manager)
    start = at(2025, 1, 1, 0)
    end = at(2025, 4, 1, 0)

    def system(code):
        return (
            LedgerEntry.objects.filter(
                account__system_code=code, created_at__gte=start, created_at__lt=end
            ).aggregate(s=Sum("amount"))["s"]
            or 0
        )

    # when the report is read by month
    total = report_build(dimension=Dimension.MONTH, month_from=MONTHS[0], month_to=MONTHS[-1]).total
    # then each figure is what the programme's own accounts received, seen from their side
    S = CreditAccount.System
    assert total.used.credit_seconds == system(S.USAGE)
    assert total.expired.credit_seconds == system(S.EXPIRED)
    assert total.adjusted.credit_seconds == -system(S.ADJUSTMENTS)
    assert total.issued.credit_seconds - total.revoked.credit_seconds == -system(S.GRANTS_ISSUED)
    # and the net change is how much the holders' balances grew over the months
    holders = LedgerEntry.objects.exclude(account__kind=CreditAccount.Kind.SYSTEM)
    before = holders.filter(created_at__lt=start).aggregate(s=Sum("amount"))["s"]
    after = holders.filter(created_at__lt=end).aggregate(s=Sum("amount"))["s"]
    assert total.net.credit_seconds == after - before


def test_months_are_cut_in_pakistan_time(programme_manager):
    # given one organisation charged one second before and one second after midnight in
    # Karachi on 31 January (19:00 UTC), and once more just before midnight UTC
    organisation, account = make_organisations(1)[0]
    with travel(at(2025, 1, 5)):
        _lot(account, 10_000, RATES[1], at(2025, 6, 1), key="lot")
    with travel(dt.datetime(2025, 1, 31, 18, 59, 59, tzinfo=dt.UTC)):
        _use(account, 11, key="last-second-of-january")
    with travel(dt.datetime(2025, 1, 31, 19, 0, 0, tzinfo=dt.UTC)):
        _use(account, 13, key="first-second-of-february")
    with travel(dt.datetime(2025, 1, 31, 23, 59, 59, tzinfo=dt.UTC)):
        _use(account, 17, key="still-january-in-utc")
    refresh()
    # when the report is read by month
    report = report_build(
        dimension=Dimension.MONTH, month_from=dt.date(2025, 1, 1), month_to=dt.date(2025, 2, 1)
    )
    # then January ends at midnight in Karachi, not in UTC
    january, february = report.rows
    assert (january.key, january.used.credit_seconds) == ("2025-01", 11)
    assert (february.key, february.used.credit_seconds) == ("2025-02", 13 + 17)
    assert february.used.pkr == Decimal(30) * RATES[1] / 3600
    # and a range of February alone leaves January's second out
    only_february = report_build(
        dimension=Dimension.ORGANISATION,
        month_from=dt.date(2025, 2, 1),
        month_to=dt.date(2025, 2, 1),
    )
    assert only_february.total.used.credit_seconds == 30
    assert only_february.total.issued.credit_seconds == 0


# --- The exports ----------------------------------------------------------------------------

RANGE = {"month_from": "2025-01", "month_to": "2025-03"}


def _csv(client, dimension):
    response = client.get(
        reverse("dashboard:reports_export", args=["csv"]), {"dimension": dimension, **RANGE}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert (
        f'filename="programme-report-{dimension}-2025-01-to-2025-03.csv"'
        in response["Content-Disposition"]
    )
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def _xlsx(client, dimension):
    response = client.get(
        reverse("dashboard:reports_export", args=["xlsx"]), {"dimension": dimension, **RANGE}
    )
    assert response.status_code == 200
    assert "spreadsheetml" in response["Content-Type"]
    assert (
        f'filename="programme-report-{dimension}-2025-01-to-2025-03.xlsx"'
        in response["Content-Disposition"]
    )
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    rows = list(sheet.iter_rows())
    header = [cell.value for cell in rows[0]]
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


def test_csv_and_xlsx_totals_equal_the_ledger(client, programme_manager):
    # given the books and a programme manager
    make_books(programme_manager)
    client.force_login(programme_manager)
    for dimension in Dimension.values:
        rows, total = expected(dimension)
        # when both files are downloaded
        lines = _csv(client, dimension)
        cells = _xlsx(client, dimension)
        # then each has the report's rows, then a totals row equal to the ledger's sums
        assert [line["key"] for line in lines] == [str(cell["key"].value) for cell in cells]
        assert lines[-1]["key"] == cells[-1]["key"].value == "total"
        for name in FIGURES:
            seconds, pkr = total[name]
            assert int(lines[-1][f"{name}_credit_seconds"]) == seconds, (dimension, name)
            assert Decimal(lines[-1][f"{name}_gpu_hours"]) == hours(seconds)
            assert Decimal(lines[-1][f"{name}_pkr"]) == paisa(pkr), (dimension, name)
            assert sum(int(line[f"{name}_credit_seconds"]) for line in lines[:-1]) == seconds
            seconds_cell = cells[-1][f"{name}_credit_seconds"]
            hours_cell = cells[-1][f"{name}_gpu_hours"]
            pkr_cell = cells[-1][f"{name}_pkr"]
            assert seconds_cell.data_type == hours_cell.data_type == pkr_cell.data_type == "n"
            assert seconds_cell.value == seconds
            assert Decimal(str(hours_cell.value)) == hours(seconds)
            assert Decimal(str(pkr_cell.value)) == paisa(pkr), (dimension, name)
            assert hours_cell.number_format == pkr_cell.number_format == "#,##0.00"
            assert sum(cell[f"{name}_credit_seconds"].value for cell in cells[:-1]) == seconds
        # and every row of the files equals the ledger too
        for line in lines[:-1]:
            figures = rows.get(line["key"], {n: (0, Fraction(0)) for n in FIGURES})
            for name in FIGURES:
                assert int(line[f"{name}_credit_seconds"]) == figures[name][0]
                assert Decimal(line[f"{name}_pkr"]) == paisa(figures[name][1])


def test_exported_names_cannot_become_formulas(client, programme_manager):
    # given an organisation whose name a spreadsheet would run as a formula
    organisation, account = make_organisations(1)[0]
    organisation.legal_name = '=HYPERLINK("http://evil.example","x")'
    organisation.save()
    with travel(at(2025, 1, 5)):
        _lot(account, 3600, RATES[0], at(2025, 6, 1), key="lot")
    client.force_login(programme_manager)
    query = {"dimension": "organisation", "month_from": "2025-01", "month_to": "2025-01"}
    # when the reports are exported
    text = b"".join(
        client.get(reverse("dashboard:reports_export", args=["csv"]), query).streaming_content
    ).decode()
    content = b"".join(
        client.get(reverse("dashboard:reports_export", args=["xlsx"]), query).streaming_content
    )
    # then the name is text in both
    assert "'=HYPERLINK" in text
    cell = load_workbook(io.BytesIO(content)).active["C2"]
    assert cell.data_type == "s"
    assert cell.value == organisation.legal_name


# --- The pages ------------------------------------------------------------------------------


def test_the_page_shows_the_report_with_its_totals_and_export_links(client, programme_manager):
    make_books(programme_manager, organisations=6)
    client.force_login(programme_manager)
    response = client.get(reverse("dashboard:reports"), {"dimension": "sector", **RANGE})
    assert response.status_code == 200
    report = response.context["report"]
    _rows, total = expected(Dimension.SECTOR)
    assert_row_matches(report.total, total, "page")
    page = response.content.decode()
    assert 'id="report-total"' in page
    assert f">{display_gpu_hours(total['used'][0]):,}<" in page
    assert f">{paisa(total['used'][1]):,}<" in page
    query = "dimension=sector&amp;month_from=2025-01&amp;month_to=2025-03"
    assert f'href="{reverse("dashboard:reports_export", args=["csv"])}?{query}"' in page
    assert f'href="{reverse("dashboard:reports_export", args=["xlsx"])}?{query}"' in page
    assert 'media="print"' in page
    assert reverse("dashboard:reports") in page  # the programme nav links here


def test_a_long_report_is_paged_on_screen_with_the_totals_of_every_row(
    client, programme_manager, monkeypatch
):
    # given thirteen rows (twelve organisations and the students) and five rows a page
    make_books(programme_manager)
    monkeypatch.setattr(report_views, "REPORT_PAGE_SIZE", 5)
    client.force_login(programme_manager)
    _rows, total = expected(Dimension.ORGANISATION)
    shown = []
    for number in (1, 2, 3):
        # when each page is opened
        response = client.get(
            reverse("dashboard:reports"),
            {"dimension": "organisation", "page": number, **RANGE},
        )
        shown += [row.key for row in response.context["page"].rows]
        # then each shows its rows and the totals of all of them
        assert_row_matches(response.context["report"].total, total, number)
    report = report_build(
        dimension=Dimension.ORGANISATION, month_from=MONTHS[0], month_to=MONTHS[-1]
    )
    assert shown == [row.key for row in every_row(report)]
    assert len(shown) == 13
    assert shown[-1] == reports.STUDENTS
    assert "Rows 11 to 13;" in response.content.decode()


def test_the_first_view_is_the_last_twelve_months(client, programme_manager):
    client.force_login(programme_manager)
    with travel(at(2025, 3, 14)):
        response = client.get(reverse("dashboard:reports"))
    assert response.status_code == 200
    report = response.context["report"]
    assert report.dimension == Dimension.MONTH
    assert (report.month_from, report.month_to) == (dt.date(2024, 4, 1), dt.date(2025, 3, 1))
    assert len(report.rows) == 12


BAD_QUERIES = [
    ({"dimension": "colour", **RANGE}, "dimension"),
    ({"dimension": "month", "month_from": "2025-13", "month_to": "2025-03"}, "month_from"),
    ({"dimension": "month", "month_from": "soon", "month_to": "2025-03"}, "month_from"),
    ({"dimension": "month", "month_from": "2025-1", "month_to": "2025-03"}, "month_from"),
    ({"dimension": "month", "month_from": "1999-12", "month_to": "2025-03"}, "month_from"),
    ({"dimension": "month", "month_from": "2025-01", "month_to": "9999-12"}, "month_to"),
    ({"dimension": "month", "month_from": "2025-04", "month_to": "2025-03"}, "month_to"),
    ({"dimension": "month", "month_from": "2000-01", "month_to": "2025-03"}, "month_to"),
    ({"dimension": "month", "month_from": "2025-01"}, "month_to"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
def test_bad_input_is_refused_with_the_form_and_nothing_else(
    client, programme_manager, query, field
):
    client.force_login(programme_manager)
    response = client.get(reverse("dashboard:reports"), query)
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert "report" not in response.context
    assert 'id="report-table"' not in response.content.decode()
    for extension in ("csv", "xlsx"):
        export = client.get(reverse("dashboard:reports_export", args=[extension]), query)
        assert export.status_code == 400
        assert "Content-Disposition" not in export
        assert field in export.context["form"].errors


@pytest.mark.parametrize("month", ["2025-13", "1999-12", "2025-00"])
def test_the_monthly_report_of_no_such_month_is_not_found(client, programme_manager, month):
    client.force_login(programme_manager)
    response = client.get(reverse("dashboard:reports") + f"monthly/{month}/")
    assert response.status_code == 404


# --- The monthly report ---------------------------------------------------------------------


def _decide(manager, organisation, owner, *, submitted, decided, approve, changes_at=None):
    """An application submitted, reviewed (perhaps sent back once) and decided at given times."""
    with travel(submitted):
        application = application_services.application_create(
            organisation=organisation,
            acting_user=owner,
            title="Crop disease detection",
            summary="A vision model for wheat rust.",
            sector="agriculture",
            requested_gpu_hours=100,
            duration_months=3,
            data_sensitivity="public",
        )
        application_services.application_submit(application=application, acting_user=owner)
    if changes_at:
        sent_back, resubmitted = changes_at
        with travel(sent_back):
            application_services.application_request_changes(
                application=application, acting_user=manager, message="Add a data plan."
            )
        with travel(resubmitted):
            application_services.application_submit(application=application, acting_user=owner)
    with travel(decided):
        application_services.application_review_start(application=application, acting_user=manager)
        if approve:
            application_services.application_approve(
                application=application,
                acting_user=manager,
                gpu_hours=approve,
                expires_at=decided + dt.timedelta(days=90),
                rate_pkr_per_gpu_hour=RATES[1],
            )
        else:
            application_services.application_reject(
                application=application, acting_user=manager, reason="Out of scope."
            )


def test_the_monthly_report_matches_the_ledger(client, programme_manager):
    # given the books, and four applications decided in February after known waits
    organisations, _students = make_books(programme_manager)
    owners = [
        MembershipFactory(organisation=o, role=Role.OWNER).user for o, _a in organisations[:4]
    ]
    _decide(
        programme_manager,
        organisations[0][0],
        owners[0],
        submitted=at(2025, 1, 30, 10),
        decided=at(2025, 2, 3, 10),
        approve=100,
    )  # 4 days
    _decide(
        programme_manager,
        organisations[1][0],
        owners[1],
        submitted=at(2025, 2, 1, 10),
        decided=at(2025, 2, 11, 10),
        approve=None,
    )  # 10 days
    _decide(
        programme_manager,
        organisations[2][0],
        owners[2],
        submitted=at(2025, 2, 2, 10),
        decided=at(2025, 2, 9, 10),
        approve=60,
        changes_at=(at(2025, 2, 4, 10), at(2025, 2, 8, 10)),
    )  # 2 days, then 1 day: 3 days with the programme, 4 with the applicant
    _decide(
        programme_manager,
        organisations[3][0],
        owners[3],
        submitted=at(2025, 2, 20, 10),
        decided=at(2025, 3, 2, 10),
        approve=100,
    )  # decided in March: not February's
    refresh()  # the approvals' grants, as the refresh queued on their commit would
    client.force_login(programme_manager)
    # when the February report is opened
    response = client.get(reverse("dashboard:report_monthly", args=["2025-02"]))
    assert response.status_code == 200
    report = response.context["report"]
    # then its headline figures are February's ledger
    _rows, total = expected(Dimension.MONTH, months=[MONTHS[1]])
    assert_row_matches(report.total, total, "february")
    february = [(at(2025, 2, 1, 0), at(2025, 3, 1, 0))]
    usage = LedgerEntry.objects.filter(
        transaction__kind="usage",
        created_at__gte=february[0][0],
        created_at__lt=february[0][1],
    ).exclude(account__kind=CreditAccount.Kind.SYSTEM)
    assert (
        report.active.organisations
        == len(set(usage.filter(account__kind="organisation").values_list("account", flat=True)))
        == len(organisations)
    )
    assert report.active.students == 6
    # and the top ten organisations are the ten biggest users, biggest first
    rows, _total = expected(Dimension.ORGANISATION, months=[MONTHS[1]])
    ranking = sorted(
        (key for key in rows if key != reports.STUDENTS), key=lambda k: -rows[k]["used"][0]
    )
    assert [row.key for row in report.top_organisations] == ranking[:10]
    for row in report.top_organisations:
        assert_row_matches(row, rows[row.key], row.label)
    # and the sector and province tables add up to the same totals
    for breakdown, dimension in [
        (report.by_sector, Dimension.SECTOR),
        (report.by_province, Dimension.PROVINCE),
    ]:
        rows, _total = expected(dimension, months=[MONTHS[1]])
        for row in breakdown.rows:
            assert_row_matches(row, rows[row.key], (dimension, row.key))
        assert breakdown.total == report.total
    # and three applications were decided in February, waiting 3, 4 and 10 days
    decisions = report.decisions
    assert (decisions.approved, decisions.partially_approved, decisions.rejected) == (1, 1, 1)
    assert decisions.median_days_waiting == Decimal("4.0")
    # and the page prints: the print stylesheet is linked, the figures are on it
    page = response.content.decode()
    assert 'print.css" media="print"' in page
    assert f'id="stat-used">{display_gpu_hours(total["used"][0]):,}<' in page
    assert 'class="card page-break"' in page


def test_the_monthly_report_of_an_empty_month(client, programme_manager):
    client.force_login(programme_manager)
    response = client.get(reverse("dashboard:report_monthly", args=["2025-02"]))
    assert response.status_code == 200
    report = response.context["report"]
    assert report.total.used.credit_seconds == 0
    assert report.top_organisations == []
    assert report.decisions.median_days_waiting is None


# --- Who may read them ----------------------------------------------------------------------


def _urls():
    return [
        reverse("dashboard:reports"),
        reverse("dashboard:reports_export", args=["csv"]),
        reverse("dashboard:reports_export", args=["xlsx"]),
        reverse("dashboard:report_monthly", args=["2025-02"]),
    ]


@pytest.fixture
def books_of_one(db):
    organisation, account = make_organisations(1)[0]
    with travel(at(2025, 2, 5)):
        _lot(account, 3600, RATES[0], at(2025, 6, 1), key="lot")
    return account


@pytest.mark.parametrize("url", range(4))
def test_anonymous_is_sent_to_sign_in(client, books_of_one, url):
    response = client.get(_urls()[url])
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert "Content-Disposition" not in response


@pytest.mark.parametrize("url", range(4))
@pytest.mark.parametrize("role", ["student", Role.MEMBER, Role.ADMIN, Role.OWNER])
def test_people_without_the_role_are_refused(client, books_of_one, url, role):
    if role == "student":
        person = StudentProfileFactory().user
    else:
        person = MembershipFactory(organisation=books_of_one.organisation, role=role).user
    client.force_login(person)
    response = client.get(_urls()[url])
    assert response.status_code == 403
    assert "Content-Disposition" not in response
    assert b"report-table" not in response.content


@pytest.mark.parametrize("url", range(4))
def test_a_programme_manager_without_mfa_must_set_it_up_first(
    client, books_of_one, programme_manager_without_mfa, url
):
    client.force_login(programme_manager_without_mfa)
    response = client.get(_urls()[url])
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_activate_totp")


# --- Query counts ---------------------------------------------------------------------------


def _books_for(organisations, *, start):
    for i, (_organisation, account) in enumerate(make_organisations(organisations, start=start)):
        with travel(at(2025, 2, 3)):
            _lot(account, 7200 + i, RATES[i % 3], at(2025, 2, 20), key=f"q-lot:{start + i}")
        with travel(at(2025, 2, 10)):
            _use(account, 600 + i, key=f"q-use:{start + i}")
        with travel(at(2025, 2, 21)):
            grant_expire(grant=CreditGrant.objects.get(account=account))


def _queries(client, url, query=None):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, query or {})
        if response.streaming:
            b"".join(response.streaming_content)
    assert response.status_code == 200
    return len(captured)


def test_query_counts_do_not_grow_with_the_number_of_organisations(
    client, programme_manager, django_assert_max_num_queries
):
    client.force_login(programme_manager)
    pages = [
        (reverse("dashboard:report_monthly", args=["2025-02"]), None),
        *[
            (reverse(name, args=args), {"dimension": d, **RANGE})
            for d in Dimension.values
            for name, args in [
                ("dashboard:reports", []),
                ("dashboard:reports_export", ["csv"]),
                ("dashboard:reports_export", ["xlsx"]),
            ]
        ],
    ]
    # given 5 organisations with grants, usage and expiries
    _books_for(5, start=0)
    few = [_queries(client, url, query) for url, query in pages]
    # when there are 50
    _books_for(45, start=5)
    for (url, query), count in zip(pages, few, strict=True):
        # then every page and export takes as many queries as before, and few
        with django_assert_max_num_queries(count):
            response = client.get(url, query or {})
            if response.streaming:
                b"".join(response.streaming_content)
        assert count <= 20, url  # about ten for the session, the gate and MFA; the rest reads
