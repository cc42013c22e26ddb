"""The role matrix over every programme page: only a programme manager with MFA gets in."""

import pytest
from django.urls import reverse

from portal.onboarding.models import Cohort
from portal.organisations.models import Role
from tests.factories import MembershipFactory, StudentProfileFactory

pytestmark = pytest.mark.django_db

PAGES = ["dashboard:overview", "dashboard:audit", "dashboard:cohorts"]


@pytest.fixture
def people(programme_manager_without_mfa, programme_manager):
    return {
        "student": StudentProfileFactory().user,
        "startup member": MembershipFactory(role=Role.MEMBER).user,
        "organisation admin": MembershipFactory(role=Role.ADMIN).user,
        "organisation owner": MembershipFactory(role=Role.OWNER).user,
    }


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_is_sent_to_sign_in(client, page):
    response = client.get(reverse(page))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize(
    "role", ["student", "startup member", "organisation admin", "organisation owner"]
)
def test_people_without_the_role_are_forbidden(client, people, role, page):
    client.force_login(people[role])
    assert client.get(reverse(page)).status_code == 403


@pytest.mark.parametrize("page", PAGES)
def test_a_programme_manager_without_mfa_must_set_it_up_first(
    client, programme_manager_without_mfa, page
):
    client.force_login(programme_manager_without_mfa)
    response = client.get(reverse(page))
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_activate_totp")


@pytest.mark.parametrize("page", PAGES)
def test_a_programme_manager_with_mfa_gets_in(client, programme_manager, page):
    client.force_login(programme_manager)
    assert client.get(reverse(page)).status_code == 200


def test_forbidden_cohort_creation_creates_nothing(client, people):
    client.force_login(people["organisation owner"])
    response = client.post(
        reverse("dashboard:cohorts"),
        {"name": "Sneaky", "capacity": 5, "expires_at": "2099-01-01T00:00"},
    )
    assert response.status_code == 403
    assert not Cohort.objects.filter(name="Sneaky").exists()
