import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.audit.services import audit_record
from portal.onboarding.models import Cohort
from portal.organisations.models import Role
from tests.factories import (
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_overview_counts_who_arrived(client, programme_manager):
    # given two founders with their startups, one student, and one person who only signed up
    for _ in range(2):
        founder = UserFactory()
        organisation = OrganisationFactory(created_by=founder)
        MembershipFactory(organisation=organisation, user=founder, role=Role.OWNER)
    StudentProfileFactory(cohort=CohortFactory(created_by=programme_manager))
    UserFactory()
    suspended = OrganisationFactory(created_by=founder, is_active=False)
    MembershipFactory(organisation=suspended, user=founder, role=Role.MEMBER)
    # when the programme manager opens the overview
    client.force_login(programme_manager)
    overview = client.get(reverse("dashboard:overview")).context["overview"]
    # then each arrival is counted once, and programme managers are not "pending"
    assert overview.organisations == 2
    assert overview.organisations_suspended == 1
    assert overview.students == 1
    assert overview.pending_onboarding == 1
    assert overview.cohorts == 1


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


def test_audit_log_filters(client, programme_manager):
    alice = UserFactory(email="alice@example.pk")
    audit_record(actor=alice, action="auth.signed_in", target=alice)
    audit_record(actor=alice, action="invitation.created", target=alice)
    audit_record(actor=None, action="auth.sign_in_failed", data={"email": "mallory@example.pk"})
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:audit"), {"actor": "alice", "action": "auth.signed_in"})
    events = list(page.context["page"])
    assert [e.action for e in events] == ["auth.signed_in"]
    assert events[0].actor_email == "alice@example.pk"


def test_audit_log_rejects_an_inverted_date_range(client, programme_manager):
    client.force_login(programme_manager)
    response = client.get(
        reverse("dashboard:audit"), {"date_from": "2026-05-02", "date_to": "2026-05-01"}
    )
    assert response.status_code == 400
    assert "date_to" in response.context["form"].errors
