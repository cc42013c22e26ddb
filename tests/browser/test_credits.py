"""GPU credits in a real browser: a founder applies, a programme manager grants part of it."""

import re
import time

import pytest
from allauth.mfa import app_settings as mfa_settings
from django.utils import dateformat, timezone, translation
from playwright.sync_api import Page, expect

from portal.credits.models import CreditApplication, CreditGrant
from portal.organisations.models import Role
from portal.users.services import programme_manager_grant
from tests.conftest import totp_activate, totp_code_now
from tests.factories import PASSWORD, MembershipFactory, OrganisationFactory, UserFactory

PASSWORD_FIELD = re.compile(r"^Password:?$")
PROJECT = "Urdu speech recognition for farm advisories"
# allauth accepts only the current 30-second step (TOTP_TOLERANCE = 0): never type a code that
# is about to turn over while the form is on its way.
TOTP_SAFETY_SECONDS = 5


def sign_in(page: Page, email: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label(PASSWORD_FIELD).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()


def totp_code_fresh() -> str:
    """The current code, after waiting out the step's last seconds if need be."""
    period = mfa_settings.TOTP_PERIOD
    left = period - time.time() % period
    if left < TOTP_SAFETY_SECONDS:
        time.sleep(left + 0.1)
    return totp_code_now()


def this_month_label() -> str:
    """How the credits page names this month's statement, e.g. "June 2025"."""
    with translation.override("en"):
        return dateformat.format(timezone.localdate(), "F Y")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_founder_applies_and_a_programme_manager_grants_part_of_the_request(
    page, new_context, request_log
):
    # Given an organisation with its owner, and a programme manager with an authenticator app
    organisation = OrganisationFactory(legal_name="Kisan Awaz (Private) Limited")
    founder = UserFactory(email="founder@kisanawaz.pk")
    MembershipFactory(organisation=organisation, user=founder, role=Role.OWNER)
    manager = UserFactory(email="manager@programme.gov.pk")
    programme_manager_grant(user=manager, acting_user=None)
    totp_activate(manager)

    # When the founder signs in and follows their organisation's credits link
    sign_in(page, founder.email)
    expect(page.get_by_role("heading", name=organisation.legal_name, level=1)).to_be_visible()
    page.get_by_role("link", name="GPU credits and applications").click()
    expect(page.get_by_role("heading", name="GPU credits", level=1)).to_be_visible()
    expect(page.locator("#balance")).to_have_text("0.00")

    # And applies for 500 GPU-hours over three months, saving a draft first
    page.get_by_role("link", name="Apply for GPU credits").click()
    expect(page.get_by_role("heading", name="Apply for GPU credits", level=1)).to_be_visible()
    page.get_by_label("Project title").fill(PROJECT)
    page.get_by_label("Summary").fill(
        "Fine-tune a Whisper model on 2,000 hours of Punjabi and Saraiki farm-radio recordings."
    )
    page.get_by_label("Sector").select_option(label="Agriculture")
    page.get_by_label("Requested GPU-hours").fill("500")
    page.get_by_label("Preferred GPU class").select_option(label="NVIDIA H100 80 GB")
    page.get_by_label("Duration (months)").fill("3")
    page.get_by_label("Dataset sensitivity").select_option(label="Public data only")
    page.get_by_role("button", name="Save draft").click()

    # Then the draft is saved and can be submitted
    expect(page.get_by_role("heading", name=PROJECT, level=1)).to_be_visible()
    expect(page.get_by_text("Draft saved. Submit it when it is ready.")).to_be_visible()
    expect(page.locator("#application-state")).to_have_text("Draft")

    # When they submit it for review
    page.get_by_role("button", name="Submit for review").click()

    # Then it is waiting for a programme manager
    expect(page.get_by_text("Submitted. A programme manager will review it.")).to_be_visible()
    expect(page.locator("#application-state")).to_have_text("Submitted")

    # When the programme manager, in a browser of their own, signs in with password and code
    manager_page = new_context().new_page()
    sign_in(manager_page, manager.email)
    expect(manager_page.get_by_role("heading", name="Two-Factor Authentication")).to_be_visible()
    manager_page.get_by_label("Code").fill(totp_code_fresh())
    manager_page.get_by_role("button", name="Sign In").click()

    # Then they land on the programme dashboard
    expect(manager_page).to_have_url(re.compile(r"/programme/$"))

    # When they open the application from the queue and start the review
    manager_page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Applications"
    ).click()
    expect(manager_page.get_by_role("heading", name="Credit applications")).to_be_visible()
    manager_page.locator("#queue").get_by_role("link", name=PROJECT).click()
    expect(manager_page.get_by_role("heading", name=PROJECT, level=1)).to_be_visible()
    expect(manager_page.locator("#application-state")).to_have_text("Submitted")
    manager_page.get_by_role("button", name="Start review").click()
    expect(manager_page.get_by_text("Review started.")).to_be_visible()
    expect(manager_page.locator("#application-state")).to_have_text("In review")

    # And approve 300 of the 500 GPU-hours at PKR 640, keeping the suggested expiry
    approve = manager_page.get_by_role("region", name="Approve")
    expect(approve.get_by_label("GPU-hours to grant")).to_have_value("500")
    expect(approve.get_by_label("Credits expire on")).not_to_have_value("")
    approve.get_by_label("GPU-hours to grant").fill("300")
    approve.get_by_label("PKR per GPU-hour (fixed for this grant)").fill("640")
    approve.get_by_role("button", name="Approve and grant").click()

    # Then the application is partially approved
    expect(
        manager_page.get_by_text("Approved: the credits are on the organisation's account.")
    ).to_be_visible()
    expect(manager_page.locator("#application-state")).to_have_text("Partially approved")
    application = CreditApplication.objects.get()
    assert application.state == "partially_approved"
    grant = CreditGrant.objects.get()
    assert grant.application == application
    assert grant.amount == 300 * 3600
    assert str(grant.rate_pkr_per_gpu_hour) == "640.00"

    # When the founder reloads the credits page
    page.goto(f"/organisations/{organisation.slug}/credits/")

    # Then 300 GPU-hours are available, on one grant at PKR 640
    expect(page.locator("#balance")).to_have_text("300.00")
    grant_row = page.locator("#grants tbody tr")
    expect(grant_row).to_have_count(1)
    expect(grant_row).to_contain_text(PROJECT)
    expect(grant_row).to_contain_text("640.00")

    # When they open this month's statement
    page.get_by_role("link", name=this_month_label()).click()

    # Then it closes on 300 GPU-hours worth PKR 192,000
    expect(page.get_by_role("heading", name=f"Statement for {this_month_label()}")).to_be_visible()
    expect(page.locator("#closing-gpu-hours")).to_have_text("300.00")
    expect(page.locator("#closing-pkr")).to_have_text("192,000.00")
    request_log.assert_only_live_server()
