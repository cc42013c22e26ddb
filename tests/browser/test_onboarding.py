"""Onboarding in a real browser: sign up, verify, register a startup or join as a student."""

import re
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from portal.onboarding.models import StudentProfile
from portal.organisations.models import Organisation
from tests.factories import PASSWORD, UniversityFactory, UserFactory

URL = re.compile(r"https?://[^\s<>\"']+")
PASSWORD_FIELD = re.compile(r"^Password:?$")
ROLE_FIELD = re.compile(r"^Role:?$")
ORGANISATION = "Dastak Labs (Private) Limited"
SECP_ERROR = re.compile(r"Enter the 7-digit company registration number \(CUIN\)")


def link_in(message, live_server) -> str:
    """The one link in an e-mail, moved onto the live server (the path is what matters)."""
    urls = URL.findall(message.body)
    assert len(urls) == 1, f"expected one link in the e-mail, found {urls}:\n{message.body}"
    parts = urlsplit(urls[0])
    return f"{live_server.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def mail_to(mailoutbox, address: str) -> list:
    return [message for message in mailoutbox if address in message.to]


def sign_up(page: Page, *, name: str, email: str) -> None:
    page.get_by_label("Full name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label(PASSWORD_FIELD).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()


def verify_by_link(page: Page, mailoutbox, live_server, email: str) -> None:
    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
    messages = mail_to(mailoutbox, email)
    assert len(messages) == 1, f"expected one verification e-mail to {email}, got {messages}"
    page.goto(link_in(messages[0], live_server))
    expect(page.get_by_role("heading", name="Confirm Email Address")).to_be_visible()
    page.get_by_role("button", name="Confirm").click()


def members(page: Page):
    return page.get_by_role("region", name="Members").get_by_role("row")


def role_of(page: Page, email: str):
    return members(page).filter(has_text=email).get_by_role("cell").nth(2)


def fill_startup_form(page: Page, *, secp: str) -> None:
    page.get_by_label("Legal name").fill(ORGANISATION)
    page.get_by_label("SECP registration number").fill(secp)
    page.get_by_label("NTN").fill("1234567-8")
    page.get_by_label("Sector").select_option(label="Language and speech")
    page.get_by_label("City").fill("Lahore")
    page.get_by_label("Province or territory").select_option(label="Punjab")
    page.get_by_label("Website").fill("dastak.pk")
    page.get_by_label("Team size").select_option(label="2 to 5")
    page.get_by_label("Most sensitive data you will process").select_option(
        label="Personal data about people"
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_founder_signs_up_registers_a_startup_and_a_teammate_joins_by_invitation(
    page, new_context, live_server, mailoutbox, request_log
):
    # Given a founder who arrives at the home page
    page.goto("/")

    # When they sign up and open the link in the verification e-mail
    page.get_by_role("link", name="Sign up", exact=True).click()
    sign_up(page, name="Ayesha Khan", email="ayesha@dastak.pk")
    verify_by_link(page, mailoutbox, live_server, "ayesha@dastak.pk")

    # Then they are signed in and choose a path, with no warning about verification
    expect(page.get_by_role("heading", name="How will you use the national GPUs?")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)

    # When they register their startup, writing the SECP number with its CUIN- prefix
    page.get_by_role("link", name="Register a startup").click()
    fill_startup_form(page, secp="CUIN-0123456")
    page.get_by_role("button", name="Register startup").click()

    # Then the organisation page shows the company, its canonical SECP number and the owner
    expect(page.get_by_role("heading", name=ORGANISATION, level=1)).to_be_visible()
    expect(page.get_by_text("SECP 0123456")).to_be_visible()
    expect(role_of(page, "ayesha@dastak.pk")).to_have_text("Owner")
    organisation = Organisation.objects.get()
    assert organisation.secp_registration_number == "0123456"
    assert organisation.ntn == "1234567-8"
    assert organisation.website == "https://dastak.pk"

    # When the founder invites a teammate as a member
    invite = page.get_by_role("region", name="Invite a teammate")
    invite.get_by_label("E-mail address").fill("teammate@example.pk")
    expect(invite.get_by_label(ROLE_FIELD)).to_have_value("member")
    invite.get_by_role("button", name="Send invitation").click()

    # Then the invitation is pending and on its way by e-mail
    expect(page.get_by_text("Invitation sent to teammate@example.pk.")).to_be_visible()
    pending = page.get_by_role("region", name="Pending invitations").get_by_role("row")
    expect(pending.filter(has_text="teammate@example.pk")).to_contain_text("Member")
    invitations = mail_to(mailoutbox, "teammate@example.pk")
    assert len(invitations) == 1
    assert ORGANISATION in invitations[0].subject

    # When the teammate, in a browser of their own, opens the link and creates an account
    teammate = new_context().new_page()
    teammate.goto(link_in(invitations[0], live_server))
    expect(teammate.get_by_role("heading", name=f"Join {ORGANISATION}")).to_be_visible()
    teammate.get_by_role("link", name="Create account").click()
    sign_up(teammate, name="Bilal Ahmed", email="teammate@example.pk")

    # Then the invitation link counted as proof of the address: no verification step, no e-mail
    expect(teammate.get_by_role("button", name="Accept invitation")).to_be_visible()
    assert mail_to(mailoutbox, "teammate@example.pk") == invitations

    # When they accept
    teammate.get_by_role("button", name="Accept invitation").click()

    # Then they see the organisation with both people in it
    expect(teammate.get_by_role("heading", name=ORGANISATION, level=1)).to_be_visible()
    expect(teammate.get_by_text("Your role: Member")).to_be_visible()
    expect(role_of(teammate, "ayesha@dastak.pk")).to_have_text("Owner")
    expect(role_of(teammate, "teammate@example.pk")).to_have_text("Member")

    # And the founder, reloading, sees the new member and no pending invitation
    page.reload()
    expect(role_of(page, "teammate@example.pk")).to_have_text("Member")
    pending_section = page.get_by_role("region", name="Pending invitations")
    expect(pending_section).to_contain_text("No pending invitations.")
    expect(pending_section).not_to_contain_text("teammate@example.pk")
    request_log.assert_only_live_server()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_student_with_a_university_subdomain_address_joins_without_a_code(
    page, live_server, mailoutbox, request_log
):
    # Given a participating university
    UniversityFactory(
        name="National University of Sciences and Technology", domains=["nust.edu.pk"]
    )
    year = str(timezone.localdate().year + 2)

    # When a student signs up with a department address and verifies it
    page.goto("/accounts/signup/")
    sign_up(page, name="Ali Raza", email="ali@seecs.nust.edu.pk")
    verify_by_link(page, mailoutbox, live_server, "ali@seecs.nust.edu.pk")
    page.get_by_role("link", name="Join as a student").click()

    # Then the page recognises the address as the university's
    expect(
        page.get_by_text(
            "Your e-mail address belongs to National University of Sciences and Technology"
        )
    ).to_be_visible()

    # When they give their programme and graduation year
    page.get_by_label("Degree programme").fill("BS Computer Science")
    page.get_by_label("Expected graduation year").select_option(label=year)
    page.get_by_role("button", name="Create student account").click()

    # Then the student home shows the university
    expect(page.get_by_role("heading", name="Welcome, Ali")).to_be_visible()
    expect(page.get_by_text("National University of Sciences and Technology")).to_be_visible()
    profile = StudentProfile.objects.get(user__email="ali@seecs.nust.edu.pk")
    assert profile.university.name == "National University of Sciences and Technology"
    assert profile.route == StudentProfile.Route.EMAIL_DOMAIN
    request_log.assert_only_live_server()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_malformed_secp_number_is_shown_next_to_its_field(page, request_log):
    # Given a verified person, signed in, on the startup form
    UserFactory(email="founder@example.pk")
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("founder@example.pk")
    page.get_by_label(PASSWORD_FIELD).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.get_by_role("link", name="Register a startup").click()

    # When they submit a SECP number that is not seven digits
    fill_startup_form(page, secp="12AB")
    page.get_by_role("button", name="Register startup").click()

    # Then the field is marked invalid and described by the error, and what they typed is kept
    secp = page.get_by_label("SECP registration number")
    expect(secp).to_have_attribute("aria-invalid", "true")
    expect(secp).to_have_value("12AB")
    described_by = secp.get_attribute("aria-describedby")
    assert described_by, "the invalid field has no aria-describedby"
    descriptions = [page.locator(f"[id='{id_}']") for id_ in described_by.split()]
    assert any(SECP_ERROR.search(d.inner_text()) for d in descriptions if d.count() == 1), (
        f"aria-describedby={described_by!r} names no element holding the error"
    )
    expect(secp).to_have_accessible_description(SECP_ERROR)
    expect(page.get_by_label("Legal name")).to_have_value(ORGANISATION)
    assert Organisation.objects.count() == 0
    request_log.assert_only_live_server()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_choosing_urdu_turns_the_page_right_to_left(page, request_log):
    # Given the signup page in English
    page.goto("/accounts/signup/")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "en")
    expect(html).to_have_attribute("dir", "ltr")

    # When the person picks اردو in the header's language selector (it submits itself)
    page.get_by_label("Language").select_option(label="اردو")

    # Then the same page comes back in Urdu, right to left
    expect(html).to_have_attribute("lang", "ur")
    expect(html).to_have_attribute("dir", "rtl")
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))
    request_log.assert_only_live_server()
