"""Invitations send mail from the programme to any address: a hostile founder must not be able to
use the portal as a spam cannon. Limited per inviter and per organisation, per hour."""

import pytest
from django.core import mail
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError
from portal.organisations import services
from portal.organisations.models import Invitation, Role
from tests.factories import MembershipFactory, OrganisationFactory

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.INVITATIONS_PER_HOUR = LIMIT


def _invite(organisation, inviter, n: int):
    return services.invitation_create(
        organisation=organisation,
        email=f"target{n}@example.pk",
        role=Role.MEMBER,
        acting_user=inviter,
    )


def _traces() -> tuple:
    return (
        Invitation.objects.count(),
        AuditEvent.objects.filter(action="invitation.created").count(),
    )


def test_the_default_is_twenty_an_hour(settings, organisation, owner):
    del settings.INVITATIONS_PER_HOUR
    for n in range(20):
        _invite(organisation, owner, n)
    with pytest.raises(ApplicationError):
        _invite(organisation, owner, 20)
    assert Invitation.objects.count() == 20


def test_an_inviter_over_the_limit_is_refused_and_nothing_is_sent(
    organisation, owner, django_capture_on_commit_callbacks
):
    # given an owner who has sent as many invitations as an hour allows
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(LIMIT):
            _invite(organisation, owner, n)
    sent = len(mail.outbox)
    before = _traces()

    # when they send one more
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(ApplicationError) as excinfo,
    ):
        _invite(organisation, owner, LIMIT)

    # then it is refused with a clear reason; no invitation, no audit event, no e-mail
    assert excinfo.value.code == "rate_limited"
    assert "Too many invitations" in excinfo.value.message
    assert f"at most {LIMIT} an hour" in excinfo.value.message
    assert _traces() == before
    assert len(mail.outbox) == sent == LIMIT


def test_the_limit_holds_per_inviter_across_organisations(owner, organisation):
    # given one person who manages two organisations and spent the hour's invitations in one
    other = OrganisationFactory()
    MembershipFactory(organisation=other, user=owner, role=Role.OWNER)
    for n in range(LIMIT):
        _invite(organisation, owner, n)

    # when they go on inviting through the other one, they are refused there too
    before = _traces()
    with pytest.raises(ApplicationError) as excinfo:
        _invite(other, owner, 99)
    assert excinfo.value.code == "rate_limited"
    assert _traces() == before


def test_the_limit_holds_per_organisation_across_its_managers(organisation, owner, admin_member):
    # given an organisation whose owner and admin share the hour's invitations between them
    for n in range(LIMIT - 1):
        _invite(organisation, owner, n)
    _invite(organisation, admin_member, 50)

    # when the admin (under their own limit) invites once more for it, it is refused
    before = _traces()
    with pytest.raises(ApplicationError) as excinfo:
        _invite(organisation, admin_member, 51)
    assert excinfo.value.code == "rate_limited"
    assert _traces() == before


def test_the_page_answers_429_with_the_reason(client, organisation, owner):
    for n in range(LIMIT):
        _invite(organisation, owner, n)
    client.force_login(owner)

    response = client.post(
        reverse("organisations:invitation_create", kwargs={"slug": organisation.slug}),
        {"email": "one-more@example.pk", "role": "member"},
    )

    assert response.status_code == 429
    assert "Too many invitations" in response.content.decode()
    assert not Invitation.objects.filter(email="one-more@example.pk").exists()
