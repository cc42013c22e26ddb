"""The programme pages read the ledger's roll-ups: their figures equal the entries', pages of rows
are bounded and refuse pages that do not exist, and the queries a page costs do not grow with
the number of holders.

The books are made through the credit services (lots at two rates, allowances, usage drawing on
both lots, an adjustment, a revocation, last month's books), then the programme's roll-ups are
refreshed as the beat task does; the expected figures are summed here from the entries.
"""

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.credits.models import CreditAccount, CreditGrant, LedgerEntry
from portal.credits.services import (
    account_for_organisation,
    account_for_student,
    adjustment_post,
    grant_issue,
    grant_revoke,
    rollups_refresh,
)
from portal.credits.units import month_bounds
from portal.dashboard.views import reports as report_views
from portal.onboarding.allowance import student_allowance_grant
from tests.factories import OrganisationFactory, StudentProfileFactory

from .programme_helpers import HOUR, NOW, at, charge

pytestmark = pytest.mark.django_db

THIS_MONTH = NOW.date().replace(day=1)
LAST_MONTH = (THIS_MONTH - dt.timedelta(days=1)).replace(day=1)
HOLDERS = ["organisation", "student"]


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 10


def _lot(account, seconds, rate, key):
    return grant_issue(
        account=account,
        credit_seconds=seconds,
        rate_pkr_per_gpu_hour=Decimal(rate),
        expires_at=NOW + dt.timedelta(days=40 if rate == "500.00" else 60),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=key,
    )


def organisation_holder(n: int, *, used: int):
    """An organisation with lots at two rates this month, `used` credit-seconds charged (the
    first lot runs out, so the usage is at both rates), and a lot and a charge last month."""
    organisation = OrganisationFactory(legal_name=f"Startup {n:03d}")
    account = account_for_organisation(organisation)
    with at(NOW - dt.timedelta(days=30)):
        _lot(account, 20 * HOUR, "700.00", f"old:{n}")
        charge(account, 600 + n)
    with at(NOW - dt.timedelta(days=2)):
        _lot(account, HOUR, "500.00", f"a:{n}")
        _lot(account, 50 * HOUR, "640.50", f"b:{n}")
    with at(NOW):
        charge(account, used)
    return organisation, account


def student_holder(*, used: int):
    student = StudentProfileFactory().user
    with at(NOW - dt.timedelta(days=1)):
        student_allowance_grant(user=student)
    with at(NOW):
        charge(account_for_student(student), used)
    return student


def refreshed():
    with at(NOW):
        rollups_refresh(months=[LAST_MONTH, THIS_MONTH])


def holder_entries(month=THIS_MONTH):
    start, end = month_bounds(month)
    return LedgerEntry.objects.filter(
        account__kind__in=HOLDERS, created_at__gte=start, created_at__lt=end
    )


def signed_in(client, manager):
    client.force_login(manager)
    return client


# --- Every figure equals the entries' ---------------------------------------------------------


def test_the_pages_figures_equal_the_ledgers(client, programme_manager):
    # given organisations with usage at two rates, students, an adjustment and a revocation
    organisations = [organisation_holder(n, used=HOUR + 900 * n) for n in range(3)]
    students = [student_holder(used=1200 * (k + 1)) for k in range(2)]
    with at(NOW):
        adjustment_post(
            account=organisations[0][1],
            credit_seconds=-300,
            reason="Double charge",
            idempotency_key="adjust",
            acting_user=programme_manager,
        )
        grant_revoke(
            grant=organisations[1][1].grants.get(rate_pkr_per_gpu_hour=Decimal("640.50")),
            reason="Project ended",
            acting_user=programme_manager,
        )
    refreshed()
    signed_in(client, programme_manager)
    entries = holder_entries()

    def summed(**where) -> int:
        return entries.filter(**where).aggregate(s=Sum("amount"))["s"] or 0

    with at(NOW):
        overview = client.get(reverse("dashboard:overview")).context["ledger"]
        monthly = client.get(
            reverse("dashboard:report_monthly", args=[f"{THIS_MONTH:%Y-%m}"])
        ).context["report"]
        by_usage = client.get(reverse("dashboard:organisations"), {"ordering": "-used"})
        students_by_usage = client.get(reverse("dashboard:students"), {"ordering": "-used"})
        organisation_report = client.get(
            reverse("dashboard:reports"),
            {
                "dimension": "organisation",
                "month_from": f"{THIS_MONTH:%Y-%m}",
                "month_to": f"{THIS_MONTH:%Y-%m}",
            },
        )
    # then the overview's granted and used are the holder entries' of the month
    assert overview.granted_credit_seconds == summed(kind__in=["grant", "allowance"])
    assert overview.used_credit_seconds == -summed(kind="usage")
    assert overview.used_by_day == {NOW.date(): -summed(kind="usage")}
    # and the monthly report counts each holder that was charged once, whatever its rates
    assert (monthly.active.organisations, monthly.active.students) == (3, 2)
    assert monthly.total.used.credit_seconds == -summed(kind="usage")
    assert monthly.total.adjusted.credit_seconds == -300
    assert monthly.total.revoked.credit_seconds == -summed(kind="revocation")
    assert [row.label for row in monthly.top_organisations] == [
        "Startup 002",
        "Startup 001",
        "Startup 000",
    ]
    # and "most used this month" lists the charged holders, the most first, with the ledger's sum
    listed = [(o.legal_name, o.used_this_month) for o in by_usage.context["page"].object_list]
    assert listed == [
        (o.legal_name, -summed(kind="usage", account=account))
        for o, account in reversed(organisations)
    ]
    assert [s.user for s in students_by_usage.context["page"].object_list] == students[::-1]
    # and the organisation report's rows are each organisation's entries, at their own rates
    rows = {row.label: row for row in organisation_report.context["page"].rows}
    for organisation, account in organisations:
        row = rows[organisation.legal_name]
        assert row.used.credit_seconds == -summed(kind="usage", account=account)
        pkr_seconds = -sum(
            e.amount * e.grant.rate_pkr_per_gpu_hour
            for e in entries.filter(kind="usage", account=account).select_related("grant")
        )
        assert row.used.pkr_seconds == pkr_seconds
    assert rows["Students"].used.credit_seconds == -summed(
        kind="usage", account__kind=CreditAccount.Kind.STUDENT
    )
    assert organisation_report.context["report"].total.net.credit_seconds == summed()


def test_the_current_months_figures_say_when_they_were_refreshed(client, programme_manager):
    # given usage this month, before the programme's roll-ups were ever refreshed
    organisation_holder(1, used=HOUR)
    signed_in(client, programme_manager)
    with at(NOW):
        before = client.get(reverse("dashboard:overview"))
    assert before.context["ledger"].as_of is None
    assert "as of" not in before.content.decode()
    # when the refresh runs at 14:20 Pakistan time
    refreshed()
    with at(NOW):
        after = client.get(reverse("dashboard:overview"))
        monthly = client.get(reverse("dashboard:report_monthly", args=[f"{THIS_MONTH:%Y-%m}"]))
        client.post(reverse("language_set"), {"language": "ur", "next": "/"})
        in_urdu = client.get(reverse("dashboard:overview")).content.decode()
    # then the pages say so, in the reader's language
    assert after.context["ledger"].used_credit_seconds == HOUR
    assert "figures as of 14:20" in after.content.decode()
    assert "figures as of 14:20" in monthly.content.decode()
    assert "14:20 تک" in in_urdu


# --- Pages of rows ----------------------------------------------------------------------------


def _report_url(**params) -> str:
    query = {
        "dimension": "organisation",
        "month_from": f"{THIS_MONTH:%Y-%m}",
        "month_to": f"{THIS_MONTH:%Y-%m}",
        **params,
    }
    return reverse("dashboard:reports") + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def test_the_organisation_report_is_read_a_page_at_a_time(client, programme_manager, monkeypatch):
    # given five organisations and a student with books, and pages of two rows
    monkeypatch.setattr(report_views, "REPORT_PAGE_SIZE", 2)
    for n in range(5):
        organisation_holder(n, used=HOUR + n)
    student_holder(used=600)
    refreshed()
    signed_in(client, programme_manager)
    with at(NOW):
        pages = [client.get(_report_url(page=n)) for n in (1, 2, 3)]
        export = client.get(
            reverse("dashboard:reports_export", args=["csv"]) + "?" + _report_url().split("?")[1]
        )
    # then each page holds at most two organisations, by name, the students' row on the last
    labels = [[row.label for row in page.context["page"].rows] for page in pages]
    assert labels == [
        ["Startup 000", "Startup 001"],
        ["Startup 002", "Startup 003"],
        ["Startup 004", "Students"],
    ]
    assert [p.context["page"].has_next for p in pages] == [True, True, False]
    assert 'rel="next"' in pages[0].content.decode()
    # and every page carries the totals of every row, which equal the ledger
    totals = {p.context["report"].total.net.credit_seconds for p in pages}
    assert totals == {holder_entries().aggregate(s=Sum("amount"))["s"]}
    # and the export has every row, then the totals
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [r[2] for r in rows[1:]] == [
        *(f"Startup {n:03d}" for n in range(5)),
        "Students",
        "Total",
    ]


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("0", "A page is a whole number from 1."),
        ("-2", "A page is a whole number from 1."),
        ("two", "A page is a whole number from 1."),
        ("4", "This report has no page 4."),
        ("99999999999999999999", "A page is a whole number from 1."),
    ],
)
def test_a_report_page_that_does_not_exist_is_refused(
    client, programme_manager, monkeypatch, page, message
):
    monkeypatch.setattr(report_views, "REPORT_PAGE_SIZE", 2)
    for n in range(5):
        organisation_holder(n, used=HOUR)
    refreshed()
    entries = LedgerEntry.objects.count()
    signed_in(client, programme_manager)
    with at(NOW):
        response = client.get(_report_url(page=page))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert "report" not in response.context
    assert LedgerEntry.objects.count() == entries  # a read: nothing changed


@pytest.mark.parametrize("url_name", ["dashboard:organisations", "dashboard:students"])
@pytest.mark.parametrize(
    ("page", "message"),
    [("x", "A page is a whole number from 1."), ("7", "There is no page 7: the list has 1.")],
)
def test_a_directory_page_that_does_not_exist_is_refused(
    client, programme_manager, url_name, page, message
):
    organisation_holder(1, used=HOUR)
    student_holder(used=60)
    signed_in(client, programme_manager)
    with at(NOW):
        response = client.get(reverse(url_name), {"page": page})
    assert response.status_code == 400
    assert re.search(r'id="page-error">' + re.escape(message), response.content.decode())
    assert response.context["page"].number == 1  # the first page, shown under the error


# --- Queries do not grow with the holders -----------------------------------------------------

FLAT_PAGES = [
    ("dashboard:overview", [], {}),
    ("dashboard:organisations", [], {"ordering": "-used"}),
    ("dashboard:students", [], {"ordering": "-used"}),
    ("dashboard:report_monthly", [f"{THIS_MONTH:%Y-%m}"], {}),
    *(
        ("dashboard:reports", [], {"dimension": d, "month_from": "2026-10", "month_to": "2026-11"})
        for d in ("month", "organisation", "sector", "province", "university", "cohort")
    ),
    (
        "dashboard:reports_export",
        ["csv"],
        {"dimension": "organisation", "month_from": "2026-10", "month_to": "2026-11"},
    ),
    (
        "dashboard:reports_export",
        ["xlsx"],
        {"dimension": "organisation", "month_from": "2026-10", "month_to": "2026-11"},
    ),
]


def _read(response) -> None:
    if response.streaming:
        b"".join(response.streaming_content)


@pytest.mark.parametrize(("url_name", "args", "params"), FLAT_PAGES)
def test_a_pages_queries_do_not_grow_with_the_holders(
    client, programme_manager, django_assert_num_queries, url_name, args, params
):
    # given two holders (the organisation's usage at two rates, as the twenty's), and the
    # queries their page costs
    organisation_holder(0, used=HOUR + 1)
    student_holder(used=60)
    refreshed()
    signed_in(client, programme_manager)
    url = reverse(url_name, args=args)
    with at(NOW):
        _read(client.get(url, params))  # warm: the session, the caches
        with CaptureQueriesContext(connection) as few:
            _read(client.get(url, params))
    # when there are twenty
    for n in range(1, 10):
        organisation_holder(n, used=HOUR + n)
        student_holder(used=60 + n)
    refreshed()
    # then the same page costs the same number of queries
    with at(NOW), django_assert_num_queries(len(few.captured_queries)):
        response = client.get(url, params)
        _read(response)
    assert response.status_code == 200
