"""The programme directory: organisations and students with their figures and their detail
pages, on real PostgreSQL. Suspension and reactivation are tests/portal/suspension's."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.apikeys.models import ApiKey
from portal.credits.services import account_for_organisation, account_for_student
from portal.organisations.models import Organisation, Role
from portal.users.models import User
from tests.factories import (
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UserFactory,
)
from tests.portal.api.conftest import make_key
from tests.portal.credits.helpers import lot
from tests.portal.suspension.conftest import HOUR, ROLES, Status, charge, expected_denial

pytestmark = pytest.mark.django_db


# --- Organisations list ---------------------------------------------------------------------


def test_the_organisations_list_shows_each_organisations_figures(pm_client, startup):
    # given the startup and a suspended organisation with nothing yet
    idle = OrganisationFactory(is_active=False, legal_name="Idle (Private) Limited")
    # when the programme manager opens the directory
    response = pm_client.get(reverse("dashboard:organisations"))
    # then each figure is right, in credit-seconds and on the page in GPU-hours
    assert response.status_code == 200
    listed = {o.pk: o for o in response.context["page"].object_list}
    busy = listed[startup["organisation"].pk]
    assert busy.balance == 117 * HOUR
    assert busy.granted_total == 120 * HOUR
    assert busy.used_this_month == 2 * HOUR
    assert busy.members == 3
    assert busy.sandboxes_live == 1
    assert busy.account_public_id == startup["account"].public_id
    empty = listed[idle.pk]
    assert (empty.balance, empty.granted_total, empty.used_this_month) == (0, 0, 0)
    assert (empty.members, empty.sandboxes_live) == (0, 0)
    html = response.content.decode()
    assert "117.00" in html
    assert "120.00" in html
    assert reverse("dashboard:organisation", args=[startup["organisation"].public_id]) in html
    assert "Suspended" in html


def _organisation_with_figures(n: int) -> None:
    owner = MembershipFactory(role=Role.OWNER)
    MembershipFactory(organisation=owner.organisation)
    account = account_for_organisation(owner.organisation)
    lot(account, (n + 1) * HOUR)
    charge(account, 60)


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("page", ["dashboard:organisations", "dashboard:students"])
def test_a_directory_page_costs_the_same_queries_for_3_rows_as_for_30(pm_client, page):
    # given 3 organisations and 3 students, each with credits, usage and members
    def add(count: int) -> None:
        for n in range(count):
            _organisation_with_figures(n)
            person = StudentProfileFactory().user
            lot(account_for_student(person), HOUR)
            charge(account_for_student(person), 60)

    add(3)
    url = reverse(page)
    pm_client.get(url)  # warm: the session's first request records it (allauth usersessions)
    few = _queries(pm_client, url)
    # when there are ten times as many
    add(27)
    many = _queries(pm_client, url)
    # then the page costs the same number of queries, and a small one
    assert many == few
    assert few <= 15, few


def test_the_organisations_page_stays_within_its_query_bound_at_full_page(
    pm_client, django_assert_max_num_queries
):
    for n in range(55):
        _organisation_with_figures(n)
    pm_client.get(reverse("dashboard:organisations"))
    with django_assert_max_num_queries(15):
        response = pm_client.get(reverse("dashboard:organisations"))
    assert len(response.context["page"].object_list) == 50  # 50 a page
    assert response.context["page"].paginator.num_pages == 2


def test_organisation_filters_and_ordering(pm_client):
    # given organisations in different sectors, provinces and states
    a = OrganisationFactory(
        legal_name="Alpha Agritech", sector="agriculture", province="sindh", is_active=True
    )
    b = OrganisationFactory(legal_name="Beta Health", sector="health", province="punjab")
    c = OrganisationFactory(legal_name="Gamma Health", sector="health", province="sindh")
    lot(account_for_organisation(b), 50 * HOUR)
    lot(account_for_organisation(c), 5 * HOUR)
    Organisation.objects.filter(pk=c.pk).update(is_active=False)  # suspended since

    def listed(**params) -> list[str]:
        response = pm_client.get(reverse("dashboard:organisations"), params)
        assert response.status_code == 200
        return [o.legal_name for o in response.context["page"].object_list]

    # then each filter narrows, alone and together
    assert listed(q="health") == ["Beta Health", "Gamma Health"]
    assert listed(q=a.secp_registration_number) == ["Alpha Agritech"]
    assert listed(sector="health", province="sindh") == ["Gamma Health"]
    assert listed(status="suspended") == ["Gamma Health"]
    assert listed(status="active") == ["Alpha Agritech", "Beta Health"]
    assert listed(ordering="-balance") == ["Beta Health", "Gamma Health", "Alpha Agritech"]
    assert listed(ordering="balance")[0] == "Alpha Agritech"
    # and a filter that is not a choice is answered 400 with the whole list
    response = pm_client.get(reverse("dashboard:organisations"), {"sector": "nonsense"})
    assert response.status_code == 400
    assert len(response.context["page"].object_list) == 3


def test_pagination_links_keep_the_filters(pm_client):
    for n in range(52):
        OrganisationFactory(legal_name=f"Health {n:02d}", sector="health")
    OrganisationFactory(legal_name="Elsewhere", sector="media")
    response = pm_client.get(reverse("dashboard:organisations"), {"sector": "health"})
    assert response.context["page"].paginator.count == 52
    assert "sector=health&amp;page=2" in response.content.decode()
    second = pm_client.get(reverse("dashboard:organisations"), {"sector": "health", "page": 2})
    assert [o.legal_name for o in second.context["page"].object_list] == ["Health 50", "Health 51"]


# --- Organisation detail --------------------------------------------------------------------


def test_the_organisation_page_shows_members_credits_sandboxes_keys_and_events(pm_client, startup):
    organisation = startup["organisation"]
    key, secret = make_key(organisation=organisation, acting_user=startup["owner"], name="ci")
    response = pm_client.get(reverse("dashboard:organisation", args=[organisation.public_id]))
    assert response.status_code == 200
    context = response.context
    assert context["organisation"].balance == 117 * HOUR
    assert {(m.user, m.role) for m in context["members"]} == {
        (startup["owner"], Role.OWNER),
        (startup["admin"], Role.ADMIN),
        (startup["member"], Role.MEMBER),
    }
    assert sorted(g.amount for g in context["grants"]) == [20 * HOUR, 100 * HOUR]
    assert [e.amount for e in context["ledger"]][:1] == [-2 * HOUR]  # newest first
    assert len(context["ledger"]) == 4
    sandboxes = list(context["sandboxes"])
    assert sandboxes[0] == startup["running"]
    assert [s.status for s in sandboxes] == [Status.RUNNING, Status.STOPPED]
    assert [k.name for k in context["api_keys"]] == ["ci"]
    assert "apikey.created" in {e.action for e in context["events"]}
    html = response.content.decode()
    assert reverse("dashboard:account", args=[startup["account"].public_id]) in html
    assert key.display_prefix in html
    assert secret not in html
    assert ApiKey.objects.get(pk=key.pk).secret_hash not in html
    assert 'name="reason"' in html  # the suspension form
    assert "data-confirm" in html


def test_an_unknown_organisation_is_404(pm_client):
    assert pm_client.get(reverse("dashboard:organisation", args=[uuid.uuid4()])).status_code == 404


# --- Students -------------------------------------------------------------------------------


def test_the_students_list_shows_each_students_figures_and_filters(pm_client, student):
    other = StudentProfileFactory(user=UserFactory(email="zara@uni.edu.pk", name="Zara Khan"))
    User.objects.filter(pk=other.user.pk).update(is_active=False)
    url = reverse("dashboard:students")

    response = pm_client.get(url)
    assert response.status_code == 200
    listed = {s.user_id: s for s in response.context["page"].object_list}
    mine = listed[student["user"].pk]
    assert mine.balance == 10 * HOUR - HOUR // 2
    assert mine.used_this_month == HOUR // 2
    assert mine.sandboxes_live == 1
    assert (listed[other.user.pk].balance, listed[other.user.pk].sandboxes_live) == (0, 0)
    html = response.content.decode()
    assert "9.50" in html
    assert reverse("dashboard:student", args=[student["user"].hub_username]) in html

    def emails(**params) -> list[str]:
        page = pm_client.get(url, params).context["page"]
        return [s.user.email for s in page.object_list]

    assert emails(q="zara") == ["zara@uni.edu.pk"]
    assert emails(q="Khan") == ["zara@uni.edu.pk"]
    assert emails(university=student["profile"].university.pk) == [student["user"].email]
    assert emails(cohort=student["profile"].cohort.public_id) == [student["user"].email]
    assert emails(status="suspended") == ["zara@uni.edu.pk"]
    assert emails(status="active") == [student["user"].email]


def test_the_student_page_shows_credits_sandboxes_keys_and_events(pm_client, student):
    person = student["user"]
    key, secret = make_key(user=person, name="laptop")
    response = pm_client.get(reverse("dashboard:student", args=[person.hub_username]))
    assert response.status_code == 200
    context = response.context
    assert context["student"].used_this_month == HOUR // 2
    assert [s.pk for s in context["sandboxes"]] == [student["running"].pk]
    assert [k.name for k in context["api_keys"]] == ["laptop"]
    assert len(context["ledger"]) == 2
    html = response.content.decode()
    assert person.email in html
    assert secret not in html
    assert reverse("dashboard:account", args=[student["account"].public_id]) in html


def test_a_person_who_is_not_a_student_has_no_student_page(pm_client, programme_manager):
    founder = MembershipFactory(role=Role.OWNER).user
    for name in (founder.hub_username, "nobody-here"):
        assert pm_client.get(reverse("dashboard:student", args=[name])).status_code == 404


# --- Who may see this -----------------------------------------------------------------------


@pytest.fixture
def targets():
    organisation = MembershipFactory(role=Role.OWNER).organisation
    learner = StudentProfileFactory().user
    return {
        "dashboard:organisations": [],
        "dashboard:organisation": [organisation.public_id],
        "dashboard:students": [],
        "dashboard:student": [learner.hub_username],
    }


PAGES = [
    "dashboard:organisations",
    "dashboard:organisation",
    "dashboard:students",
    "dashboard:student",
]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_only_programme_managers_with_mfa_see_the_directory(client, people, targets, page, role):
    if role != "anonymous":
        client.force_login(people[role])
    expected_denial(client.get(reverse(page, args=targets[page])), role)


def test_the_programme_nav_links_to_the_directory(pm_client):
    html = pm_client.get(reverse("dashboard:overview")).content.decode()
    assert f'href="{reverse("dashboard:organisations")}"' in html
    assert f'href="{reverse("dashboard:students")}"' in html
