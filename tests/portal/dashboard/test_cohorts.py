"""Cohorts from the programme pages: a new one, who joined and what they used this month;
capacity, expiry and allowance changed, and the code closed, through audited services."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError
from portal.credits.services import account_for_student
from portal.onboarding.models import Cohort, StudentProfile
from portal.onboarding.services import cohort_deactivate, cohort_update, student_onboard
from portal.organisations.models import Role
from tests.factories import CohortFactory, MembershipFactory, StudentProfileFactory, UserFactory
from tests.portal.credits.helpers import lot

from .programme_helpers import HOUR, NOW, at, charge

pytestmark = pytest.mark.django_db


def _local(moment: dt.datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def test_the_cohort_page_lists_who_joined_with_their_usage_this_month(client, programme_manager):
    cohort = CohortFactory(name="AI Bootcamp", capacity=3, created_by=programme_manager)
    with at(NOW - dt.timedelta(days=30)):
        early = StudentProfileFactory(cohort=cohort, user__email="early@example.pk")
        lot(account_for_student(early.user), 20 * HOUR, days=90)
        charge(account_for_student(early.user), 5 * HOUR)  # last month: not shown
    with at(NOW):
        late = StudentProfileFactory(cohort=cohort, user__email="late@example.pk")
        lot(account_for_student(late.user), 5 * HOUR)
        charge(account_for_student(early.user), 1800)
        charge(account_for_student(late.user), 2 * HOUR)
        StudentProfileFactory(user__email="elsewhere@example.pk")  # another cohort
        client.force_login(programme_manager)
        response = client.get(reverse("dashboard:cohort", args=[cohort.public_id]))
    assert response.status_code == 200
    members = list(response.context["page"])
    assert [(m.user.email, m.used_credit_seconds) for m in members] == [
        ("late@example.pk", 2 * HOUR),
        ("early@example.pk", 1800),
    ]
    page = response.content.decode()
    assert cohort.code in page
    assert "2 / 3" in page
    assert "elsewhere@example.pk" not in page


def test_the_cohort_list_links_to_each_cohort(client, programme_manager):
    cohort = CohortFactory()
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:cohorts")).content.decode()
    assert f'href="{reverse("dashboard:cohort", args=[cohort.public_id])}"' in page


def test_a_programme_manager_changes_capacity_expiry_and_allowance_audited(
    client, programme_manager
):
    cohort = CohortFactory(name="AI Bootcamp", capacity=10, monthly_allowance_gpu_hours=None)
    new_expiry = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(days=60)
    client.force_login(programme_manager)
    response = client.post(
        reverse("dashboard:cohort", args=[cohort.public_id]),
        {
            "name": "AI Bootcamp",
            "capacity": 25,
            "expires_at": _local(new_expiry),
            "monthly_allowance_gpu_hours": 20,
        },
    )
    assert response.status_code == 302
    cohort.refresh_from_db()
    assert (cohort.capacity, cohort.expires_at) == (25, new_expiry)
    assert cohort.monthly_allowance_gpu_hours == 20
    event = AuditEvent.objects.get(action="cohort.updated")
    assert event.actor == programme_manager
    assert event.data["capacity"] == {"from": 10, "to": 25}
    assert event.data["monthly_allowance_gpu_hours"] == {"from": None, "to": 20}
    assert "name" not in event.data  # only what changed


def test_saving_without_a_change_records_nothing(client, programme_manager):
    cohort = CohortFactory(expires_at=timezone.now() + dt.timedelta(days=30, seconds=17.5))
    expiry = cohort.expires_at
    client.force_login(programme_manager)
    url = reverse("dashboard:cohort", args=[cohort.public_id])
    form = client.get(url).context["form"]  # the form as the page fills it in
    data = {name: form[name].value() for name in form.fields}
    data["expires_at"] = form["expires_at"].value().strftime("%Y-%m-%dT%H:%M")
    data["monthly_allowance_gpu_hours"] = data["monthly_allowance_gpu_hours"] or ""
    assert client.post(url, data).status_code == 302
    assert not AuditEvent.objects.filter(action="cohort.updated").exists()
    cohort.refresh_from_db()
    assert cohort.expires_at == expiry  # the seconds the minute input does not show are kept


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"capacity": 1}, "capacity"),  # two have joined
        ({"capacity": 0}, "capacity"),
        ({"expires_at": "2001-01-01T00:00"}, "expires_at"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(client, programme_manager, change, field):
    cohort = CohortFactory(capacity=5)
    StudentProfileFactory.create_batch(2, cohort=cohort)
    before = Cohort.objects.values().get(pk=cohort.pk)
    client.force_login(programme_manager)
    data = {"name": cohort.name, "capacity": 5, "expires_at": _local(cohort.expires_at), **change}
    response = client.post(reverse("dashboard:cohort", args=[cohort.public_id]), data)
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert Cohort.objects.values().get(pk=cohort.pk) == before
    assert not AuditEvent.objects.filter(action="cohort.updated").exists()


def test_deactivating_closes_the_code_for_newcomers_only(client, programme_manager):
    cohort = CohortFactory(capacity=5)
    joined = StudentProfileFactory(cohort=cohort)
    client.force_login(programme_manager)
    response = client.post(reverse("dashboard:cohort_deactivate", args=[cohort.public_id]))
    assert response.status_code == 302
    cohort.refresh_from_db()
    assert cohort.is_expired
    event = AuditEvent.objects.get(action="cohort.deactivated")
    assert (event.actor, event.data["joined"]) == (programme_manager, 1)
    # a newcomer cannot join with the code any more; who joined stays
    with pytest.raises(ApplicationError, match="expired"):
        student_onboard(
            user=UserFactory(),
            programme="BS CS",
            expected_graduation_year=timezone.localdate().year + 1,
            cohort_code=cohort.code,
        )
    assert StudentProfile.objects.filter(pk=joined.pk, cohort=cohort).exists()
    # and a second deactivation is refused, not recorded twice
    client.post(reverse("dashboard:cohort_deactivate", args=[cohort.public_id]))
    assert AuditEvent.objects.filter(action="cohort.deactivated").count() == 1
    # reopening is a future expiry
    cohort_update(
        cohort=cohort,
        name=cohort.name,
        capacity=cohort.capacity,
        expires_at=timezone.now() + dt.timedelta(days=7),
        monthly_allowance_gpu_hours=None,
        acting_user=programme_manager,
    )
    cohort.refresh_from_db()
    assert not cohort.is_expired


def test_deactivating_an_expired_cohort_is_a_wrong_state(programme_manager):
    cohort = CohortFactory(expires_at=timezone.now() - dt.timedelta(days=1))
    with pytest.raises(ApplicationError) as refused:
        cohort_deactivate(cohort=cohort, acting_user=programme_manager)
    assert refused.value.code == "wrong_state"


@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN, Role.OWNER, "student"])
def test_people_without_the_role_can_neither_see_nor_change_a_cohort(client, role):
    cohort = CohortFactory(capacity=5)
    before = Cohort.objects.values().get(pk=cohort.pk)
    person = (
        StudentProfileFactory().user if role == "student" else MembershipFactory(role=role).user
    )
    client.force_login(person)
    detail = reverse("dashboard:cohort", args=[cohort.public_id])
    assert client.get(detail).status_code == 403
    data = {"name": "Mine", "capacity": 500, "expires_at": "2099-01-01T00:00"}
    assert client.post(detail, data).status_code == 403
    deactivate = reverse("dashboard:cohort_deactivate", args=[cohort.public_id])
    assert client.post(deactivate).status_code == 403
    assert Cohort.objects.values().get(pk=cohort.pk) == before
    assert not AuditEvent.objects.filter(action__startswith="cohort.").exists()


def test_anonymous_and_unknown_cohorts(client, programme_manager):
    cohort = CohortFactory()
    url = reverse("dashboard:cohort", args=[cohort.public_id])
    assert client.get(url)["Location"].startswith(reverse("account_login"))
    client.force_login(programme_manager)
    unknown = reverse("dashboard:cohort", args=["00000000-0000-0000-0000-000000000000"])
    assert client.get(unknown).status_code == 404
    assert (
        client.get(reverse("dashboard:cohort_deactivate", args=[cohort.public_id])).status_code
        == 405
    )


def test_in_urdu_an_open_cohort_reads_as_a_state_not_as_the_verb(client, programme_manager):
    # "Open" is both a button (the verb, کھولیں) and a cohort's state (کھلا): msgctxt tells them
    cohort = CohortFactory(capacity=3, created_by=programme_manager)
    client.force_login(programme_manager)
    client.post(reverse("language_set"), {"language": "ur", "next": "/"})

    page = client.get(reverse("dashboard:cohort", args=[cohort.public_id])).content.decode()

    assert '<span class="badge ok" id="cohort-state">کھلا</span>' in page
    assert "کھولیں" not in page


# --- A new cohort -----------------------------------------------------------------------------


def test_cohort_creation_by_a_programme_manager(client, programme_manager):
    client.force_login(programme_manager)
    expires = (timezone.localtime() + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(
        reverse("dashboard:cohorts"),
        {
            "name": "AI Bootcamp 2027",
            "capacity": 40,
            "expires_at": expires,
            "monthly_allowance_gpu_hours": 25,
        },
    )
    assert response.status_code == 302
    cohort = Cohort.objects.get()
    assert cohort.capacity == 40
    assert cohort.monthly_allowance_gpu_hours == 25
    assert cohort.created_by == programme_manager
    assert AuditEvent.objects.filter(action="cohort.created", actor=programme_manager).exists()


@pytest.mark.parametrize(
    "data",
    [
        {"name": "", "capacity": 40, "expires_at": "2099-01-01T00:00"},
        {"name": "X", "capacity": 0, "expires_at": "2099-01-01T00:00"},
        {"name": "X", "capacity": "many", "expires_at": "2099-01-01T00:00"},
        {"name": "X", "capacity": 5, "expires_at": "2001-01-01T00:00"},
        {"name": "X", "capacity": 5, "expires_at": "not a date"},
    ],
)
def test_bad_cohort_input_is_refused_and_creates_nothing(client, programme_manager, data):
    client.force_login(programme_manager)
    response = client.post(reverse("dashboard:cohorts"), data)
    assert response.status_code == 400
    assert response.context["form"].errors
    assert not Cohort.objects.exists()
