"""A programme manager decides nothing about money that is theirs: no adjustment to, and no
revocation on, the account of an organisation they belong to or their own student account (the
review of applications already refuses them)."""

import uuid

import pytest

from portal.core.exceptions import PermissionDenied
from portal.credits.services import account_for_student, adjustment_post, grant_revoke
from portal.organisations.models import Role
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.portal.credits.helpers import books, lot, org_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_organisation_account(organisation, programme_manager):
    # the attacker: a programme manager who is also a plain member of a startup
    MembershipFactory(organisation=organisation, user=programme_manager, role=Role.MEMBER)
    return org_account(organisation)


@pytest.fixture
def own_student_account(programme_manager):
    StudentProfileFactory(user=programme_manager)
    return account_for_student(programme_manager)


@pytest.fixture(params=["organisation", "student"])
def own_account(request):
    return request.getfixturevalue(f"own_{request.param}_account")


@pytest.mark.parametrize("credit_seconds", [3600, -600])
def test_a_programme_manager_cannot_adjust_an_account_that_is_theirs(
    own_account, programme_manager, credit_seconds
):
    # given an account of theirs holding some credits
    lot(own_account, 10_000)
    before = books()

    # when they post an adjustment to it (a gift, or a correction)
    with pytest.raises(PermissionDenied) as excinfo:
        adjustment_post(
            account=own_account,
            credit_seconds=credit_seconds,
            reason="Goodwill",
            idempotency_key=f"adjustment:{uuid.uuid4()}",
            acting_user=programme_manager,
        )

    # then it is refused with a clear reason, and the books (and audit log) are unchanged
    assert "another programme manager must decide" in excinfo.value.message
    assert books() == before


def test_a_programme_manager_cannot_revoke_a_grant_of_an_account_that_is_theirs(
    own_account, programme_manager
):
    # given a grant on an account of theirs (revoking it would, say, hide a rival's records)
    grant = lot(own_account, 10_000)
    before = books()

    # when they revoke it
    with pytest.raises(PermissionDenied) as excinfo:
        grant_revoke(grant=grant, reason="Misuse", acting_user=programme_manager)

    # then it is refused, and no ledger entry, no revocation, no audit event was written
    assert "another programme manager must decide" in excinfo.value.message
    assert books() == before


def test_another_programme_manager_may_adjust_and_revoke(own_organisation_account):
    # given an organisation that one programme manager belongs to
    from portal.users.services import programme_manager_grant
    from tests.factories import UserFactory

    other = programme_manager_grant(user=UserFactory(), acting_user=None)
    grant = lot(own_organisation_account, 10_000)

    # when a programme manager who is not a member decides, both go through
    adjustment_post(
        account=own_organisation_account,
        credit_seconds=600,
        reason="Outage refund",
        idempotency_key=f"adjustment:{uuid.uuid4()}",
        acting_user=other,
    )
    assert grant_revoke(grant=grant, reason="Misuse", acting_user=other) == 10_000
