"""A programme manager's day in a real browser: approve part of an application, then find the
grant on the overview and in the report, and in the report's CSV whose totals are the ledger's."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone
from playwright.sync_api import Page, expect

from portal.credits.models import (
    ApplicationState,
    CreditAccount,
    CreditApplication,
    LedgerEntry,
    LedgerTransaction,
)
from portal.credits.services import account_for_organisation
from portal.credits.units import month_bounds
from portal.organisations.models import Role
from portal.users.services import programme_manager_grant
from tests.browser.test_credits import sign_in, totp_code_fresh
from tests.conftest import totp_activate
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.portal.credits.helpers import lot
from tests.portal.dashboard.programme_helpers import charge

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
HOUR = 3600
PROJECT = "Urdu speech recognition for farm advisories"


def submitted(organisation, title: str, *, days_ago: int) -> CreditApplication:
    return CreditApplication.objects.create(
        organisation=organisation,
        created_by=organisation.created_by,
        title=title,
        summary="Fine-tune a speech model on farm-radio recordings.",
        sector="agriculture",
        requested_gpu_hours=500,
        duration_months=3,
        data_sensitivity="public",
        state=ApplicationState.SUBMITTED,
        submitted_at=timezone.now() - dt.timedelta(days=days_ago),
    )


def granted_this_month_in_ledger() -> int:
    """GPU-seconds granted to holders this month, straight from the ledger entries."""
    start, end = month_bounds(timezone.localdate())
    return (
        LedgerEntry.objects.filter(
            account__kind__in=[CreditAccount.Kind.ORGANISATION, CreditAccount.Kind.STUDENT],
            transaction__kind__in=[LedgerTransaction.Kind.GRANT, LedgerTransaction.Kind.ALLOWANCE],
            created_at__gte=start,
            created_at__lt=end,
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )


def stat(page: Page, name: str):
    return page.locator(f"#stat-{name}")


def test_an_approval_shows_on_the_overview_in_the_report_and_in_its_export(
    new_context, request_log
):
    # Given a startup whose application waits, another one waiting too, and 50 GPU-hours
    # granted this month to a third organisation, 5 of them used
    founder = UserFactory(email="founder@kisanawaz.pk")
    kisan = OrganisationFactory(legal_name="Kisan Awaz (Private) Limited", created_by=founder)
    MembershipFactory(organisation=kisan, user=founder, role=Role.OWNER)
    submitted(kisan, PROJECT, days_ago=3)
    submitted(OrganisationFactory(), "Flood maps from satellite images", days_ago=1)
    earlier = OrganisationFactory(legal_name="Barani Labs (Private) Limited")
    earlier_account = account_for_organisation(earlier)
    lot(earlier_account, 50 * HOUR)
    charge(earlier_account, 5 * HOUR)
    manager = UserFactory(email="manager@programme.gov.pk")
    programme_manager_grant(user=manager, acting_user=None)
    totp_activate(manager)

    # When the programme manager signs in with password and code
    page = new_context().new_page()
    sign_in(page, manager.email)
    page.get_by_label("Code").fill(totp_code_fresh())
    page.get_by_role("button", name="Sign In").click()

    # Then the overview shows two applications waiting and 50 GPU-hours granted
    expect(page.get_by_role("heading", name="Programme overview", level=1)).to_be_visible()
    expect(stat(page, "waiting")).to_have_text("2")
    expect(stat(page, "granted")).to_have_text("50.00")

    # When they follow the waiting applications, open the startup's and start the review
    stat(page, "waiting").click()
    expect(page.get_by_role("heading", name="Credit applications")).to_be_visible()
    page.locator("#queue").get_by_role("link", name=PROJECT).click()
    page.get_by_role("button", name="Start review").click()
    expect(page.locator("#application-state")).to_have_text("In review")

    # And approve 300 of the 500 GPU-hours at PKR 640
    approve = page.get_by_role("region", name="Approve")
    approve.get_by_label("GPU-hours to grant").fill("300")
    approve.get_by_label("PKR per GPU-hour (fixed for this grant)").fill("640")
    approve.get_by_role("button", name="Approve and grant").click()
    expect(page.locator("#application-state")).to_have_text("Partially approved")

    # Then the overview has one application waiting and 350 GPU-hours granted this month
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Programme").click()
    expect(page.get_by_role("heading", name="Programme overview", level=1)).to_be_visible()
    expect(stat(page, "waiting")).to_have_text("1")
    expect(stat(page, "granted")).to_have_text("350.00")

    # When they ask for this month's report by organisation
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    this_month = f"{timezone.localdate():%Y-%m}"
    page.get_by_label("Report by").select_option(label="Organisation")
    page.get_by_label("From month").fill(this_month)
    page.get_by_label("To month").fill(this_month)
    page.get_by_role("button", name="Show report").click()

    # Then the startup's row has the 300 GPU-hours granted, worth PKR 192,000
    row = page.locator(f'#report-table tr[data-key="{kisan.public_id}"]')
    expect(row.locator("th")).to_have_text(kisan.legal_name)
    expect(row.locator("td").nth(0)).to_have_text("300.00")
    expect(row.locator("td").nth(1)).to_have_text("192,000.00")
    total = page.locator("#report-total")
    expect(total.locator('[data-figure="issued"]')).to_have_text("350.00")
    expect(total.locator('[data-figure="issued-pkr"]')).to_have_text("229,500.00")

    # When they download it as CSV
    with page.expect_download() as download:
        page.locator("#export-csv").click()
    body = download.value.path().read_text(encoding="utf-8")

    # Then the startup's row and the totals row are there, and the totals are the ledger's
    header, *rows = list(csv.reader(io.StringIO(body)))
    records = {record[1]: dict(zip(header, record, strict=True)) for record in rows}
    startup = records[str(kisan.public_id)]
    assert startup["name"] == kisan.legal_name
    assert int(startup["issued_credit_seconds"]) == 300 * HOUR
    assert Decimal(startup["issued_pkr"]) == Decimal("192000.00")
    totals = records["total"]
    granted = granted_this_month_in_ledger()
    assert granted == 350 * HOUR
    assert int(totals["issued_credit_seconds"]) == granted
    measures = [name[: -len("_credit_seconds")] for name in header if name.endswith("_seconds")]
    for measure in measures:
        column = f"{measure}_credit_seconds"
        assert int(totals[column]) == sum(
            int(record[column]) for key, record in records.items() if key != "total"
        ), measure
    assert Decimal(totals["issued_pkr"]) == Decimal("229500.00")  # 300 × 640 + 50 × 750
    assert int(totals["used_credit_seconds"]) == 5 * HOUR
    request_log.assert_only_live_server()
