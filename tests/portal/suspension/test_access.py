"""Only programme managers whose session passed MFA suspend or reactivate: everyone else is sent
to sign in or to set up MFA, or refused, and nothing changes."""

import pytest
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.organisations.models import Organisation, Role
from portal.users.models import User
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.portal.suspension.conftest import ROLES, expected_denial

pytestmark = pytest.mark.django_db


@pytest.fixture
def targets():
    organisation = MembershipFactory(role=Role.OWNER).organisation
    learner = StudentProfileFactory().user
    return {
        "dashboard:organisation_suspend": [organisation.public_id],
        "dashboard:organisation_reactivate": [organisation.public_id],
        "dashboard:student_suspend": [learner.hub_username],
        "dashboard:student_reactivate": [learner.hub_username],
    }


ACTIONS = [
    "dashboard:organisation_suspend",
    "dashboard:organisation_reactivate",
    "dashboard:student_suspend",
    "dashboard:student_reactivate",
]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", ROLES)
def test_only_programme_managers_with_mfa_suspend_or_reactivate(
    client, people, targets, action, role
):
    # given everything active, and one suspended organisation and student for the reactivations
    if action.endswith("reactivate"):
        Organisation.objects.update(is_active=False)
        User.objects.filter(student_profile__isnull=False).exclude(pk=people["student"].pk).update(
            is_active=False
        )
    before = (
        sorted(Organisation.objects.values_list("pk", "is_active")),
        sorted(User.objects.values_list("pk", "is_active")),
    )
    if role != "anonymous":
        client.force_login(people[role])
    expected_denial(client.post(reverse(action, args=targets[action]), {"reason": "x"}), role)
    after = (
        sorted(Organisation.objects.values_list("pk", "is_active")),
        sorted(User.objects.values_list("pk", "is_active")),
    )
    assert after == before
    assert not AuditEvent.objects.filter(
        action__in=[
            "organisation.suspended",
            "organisation.reactivated",
            "student.suspended",
            "student.reactivated",
        ]
    ).exists()
