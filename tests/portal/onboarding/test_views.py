"""Onboarding over HTTP: routing, forms, and refusals that are clear and create nothing."""

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.onboarding.models import StudentProfile, University
from portal.organisations.models import Membership, Organisation, Role
from tests.conftest import totp_code_now
from tests.factories import PASSWORD, MembershipFactory, StudentProfileFactory, UserFactory

pytestmark = pytest.mark.django_db
STARTUP = {
    "legal_name": "Karachi Speech Labs (Private) Limited",
    "secp_registration_number": "CUIN-0234567",
    "ntn": "7654321-0",
    "sector": "language",
    "city": "Karachi",
    "province": "sindh",
    "website": "ksl.pk",
    "team_size": "2-5",
    "data_sensitivity": "personal",
}


def test_a_newcomer_chooses_a_path(client, user):
    client.force_login(user)
    response = client.get(reverse("onboarding:start"))
    assert response.status_code == 200
    assert reverse("onboarding:startup") in response.content.decode()
    assert reverse("onboarding:student") in response.content.decode()


@pytest.mark.parametrize(
    ("make_person", "destination"),
    [
        (lambda: MembershipFactory(role=Role.MEMBER).user, "/organisations/"),
        (lambda: StudentProfileFactory().user, "/onboarding/student/home/"),
    ],
)
def test_onboarded_people_are_sent_home(client, make_person, destination):
    client.force_login(make_person())
    assert client.get(reverse("onboarding:start"))["Location"].startswith(destination)


def test_a_founder_registers_a_startup(client, user):
    client.force_login(user)
    response = client.post(reverse("onboarding:startup"), STARTUP)
    organisation = Organisation.objects.get()
    assert response["Location"] == reverse("organisations:detail", args=[organisation.slug])
    assert organisation.secp_registration_number == "0234567"
    assert organisation.ntn == "7654321-0"
    assert organisation.website == "https://ksl.pk"
    assert Membership.objects.get(organisation=organisation).user == user


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("secp_registration_number", "12AB", "7-digit company registration number"),
        ("secp_registration_number", "", "This field is required"),
        ("ntn", "123", "seven digits, a dash and a check digit"),
        ("province", "atlantis", "Select a valid choice"),
        ("website", "not a url at all", "Enter a valid URL"),
        ("legal_name", "x" * 201, "at most 200 characters"),
    ],
)
def test_bad_startup_input_is_tied_to_its_field_and_creates_nothing(
    client, user, field, value, message
):
    client.force_login(user)
    response = client.post(reverse("onboarding:startup"), {**STARTUP, field: value})
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors[field])
    html = response.content.decode()
    assert f'aria-describedby="id_{field}' in html
    assert 'aria-invalid="true"' in html
    assert not Organisation.objects.exists()


def test_an_unverified_person_cannot_onboard_through_the_form(client):
    person = UserFactory(verified=False)
    client.force_login(person)
    page = client.get(reverse("onboarding:startup"))
    assert "Verify your e-mail address" in page.content.decode()
    response = client.post(reverse("onboarding:startup"), STARTUP)
    assert response.status_code == 400
    assert "Verify your e-mail address first" in response.content.decode()
    assert not Organisation.objects.exists()


def test_a_student_with_a_disallowed_domain_is_told_how_to_proceed(client):
    client.force_login(UserFactory(email="ahmed@gmail.com"))
    response = client.post(
        reverse("onboarding:student"),
        {"programme": "BS CS", "expected_graduation_year": timezone.localdate().year + 1},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors["cohort_code"]
    assert "gmail.com is not the e-mail domain of a participating university" in errors[0]
    assert not StudentProfile.objects.exists()


def test_a_student_from_a_seeded_university_is_admitted(client):
    # the data migration put LUMS on the allow-list
    assert University.objects.filter(domains__domain="lums.edu.pk").exists()
    client.force_login(UserFactory(email="24100123@lums.edu.pk"))
    response = client.post(
        reverse("onboarding:student"),
        {"programme": "BS CS", "expected_graduation_year": timezone.localdate().year + 2},
    )
    assert response["Location"] == reverse("onboarding:student_home")
    home = client.get(reverse("onboarding:student_home"))
    assert "Lahore University of Management Sciences" in home.content.decode()


def test_programme_manager_signs_in_with_password_and_totp(client, programme_manager):
    response = client.post(
        reverse("account_login"), {"login": programme_manager.email, "password": PASSWORD}
    )
    assert response["Location"] == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session
    response = client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert "_auth_user_id" not in client.session
    response = client.post(reverse("mfa_authenticate"), {"code": totp_code_now()})
    assert response["Location"] == reverse("onboarding:start")
    assert client.get(reverse("onboarding:start"))["Location"] == reverse("dashboard:overview")
    assert client.get(reverse("dashboard:overview")).status_code == 200
