"""Organisation services: who may do what, and that a refusal changes nothing."""

import datetime as dt
import re

import pytest
from django.core import mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.organisations import services
from portal.organisations.models import Invitation, Membership, Role
from tests.factories import InvitationFactory, MembershipFactory, OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db


def _token_for(invitation: Invitation) -> str:
    return services.invitation_token(invitation)


def test_organisation_create_makes_the_founder_owner_and_audits(user):
    organisation = services.organisation_create(
        owner=user,
        legal_name="Indus Vision (Private) Limited",
        secp_registration_number="0198765",
        ntn=None,
        sector="health",
        city="Karachi",
        province="sindh",
        website="",
        team_size="2-5",
        data_sensitivity="personal",
    )
    assert organisation.slug == "indus-vision-private-limited"
    assert Membership.objects.get(organisation=organisation).user == user
    assert Membership.objects.get(organisation=organisation).role == Role.OWNER
    assert AuditEvent.objects.filter(action="organisation.created", actor=user).exists()


def test_organisation_create_refuses_an_already_registered_company(user, organisation):
    with pytest.raises(ApplicationError) as excinfo:
        services.organisation_create(
            owner=user,
            legal_name="Copycat",
            secp_registration_number=organisation.secp_registration_number,
            sector="other",
            city="Quetta",
            province="balochistan",
            team_size="1",
            data_sensitivity="public",
        )
    assert excinfo.value.field == "secp_registration_number"
    assert not Membership.objects.filter(user=user).exists()


def test_the_database_allows_only_one_owner(organisation, owner, member):
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.filter(user=member).update(role=Role.OWNER)


def test_owner_invites_and_the_mail_goes_out_after_commit(
    organisation, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation = services.invitation_create(
            organisation=organisation,
            email="New.Person@Example.PK",
            role=Role.ADMIN,
            acting_user=owner,
        )
    assert invitation.email == "new.person@example.pk"
    assert invitation.expires_at - timezone.now() > dt.timedelta(days=6, hours=23)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new.person@example.pk"]
    # the link in the mail names this invitation (tokens carry a timestamp, so compare meaning)
    token = re.search(r"/organisations/invitations/([^/\s]+)/", mail.outbox[0].body).group(1)
    assert services.invitation_from_token(token=token) == invitation
    assert organisation.legal_name in mail.outbox[0].subject


def test_a_member_cannot_invite_and_nothing_is_sent(
    organisation, member, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(PermissionDenied):
        services.invitation_create(
            organisation=organisation, email="x@example.pk", role=Role.MEMBER, acting_user=member
        )
    assert not Invitation.objects.exists()
    assert mail.outbox == []


def test_inviting_as_owner_is_refused(organisation, owner):
    with pytest.raises(ApplicationError):
        services.invitation_create(
            organisation=organisation, email="x@example.pk", role=Role.OWNER, acting_user=owner
        )
    assert not Invitation.objects.exists()


def test_reinviting_replaces_the_open_invitation(organisation, owner):
    first = services.invitation_create(
        organisation=organisation, email="x@example.pk", role=Role.MEMBER, acting_user=owner
    )
    second = services.invitation_create(
        organisation=organisation, email="X@example.pk", role=Role.ADMIN, acting_user=owner
    )
    first.refresh_from_db()
    assert first.revoked_at is not None
    assert list(organisation.invitations.pending()) == [second]
    with pytest.raises(ApplicationError):
        services.invitation_from_token(token=_token_for(first))


def test_inviting_an_existing_member_is_refused(organisation, owner, member):
    with pytest.raises(ApplicationError) as excinfo:
        services.invitation_create(
            organisation=organisation, email=member.email, role=Role.MEMBER, acting_user=owner
        )
    assert excinfo.value.field == "email"


def test_accepting_makes_a_member_once(organisation, owner):
    invitation = InvitationFactory(
        organisation=organisation, invited_by=owner, email="new@example.pk"
    )
    invitee = UserFactory(email="new@example.pk")
    membership = services.invitation_accept(token=_token_for(invitation), user=invitee)
    assert membership.role == Role.MEMBER
    invitation.refresh_from_db()
    assert invitation.accepted_by == invitee
    # when the same link is used again, by anyone
    with pytest.raises(ApplicationError, match="already been used"):
        services.invitation_accept(token=_token_for(invitation), user=invitee)
    assert Membership.objects.filter(organisation=organisation).count() == 2


def test_an_expired_invitation_is_refused(organisation, owner):
    invitation = InvitationFactory(
        organisation=organisation,
        email="late@example.pk",
        expires_at=timezone.now() - dt.timedelta(seconds=1),
    )
    invitee = UserFactory(email="late@example.pk")
    with pytest.raises(ApplicationError, match="expired"):
        services.invitation_accept(token=_token_for(invitation), user=invitee)
    assert not Membership.objects.filter(user=invitee).exists()


def test_a_token_older_than_its_signature_allows_is_refused(organisation, settings):
    invitation = InvitationFactory(organisation=organisation, email="late@example.pk")
    token = _token_for(invitation)
    settings.INVITATION_MAX_AGE_DAYS = -1  # the signature's timestamp is now "too old"
    with pytest.raises(ApplicationError, match="expired"):
        services.invitation_from_token(token=token)


@pytest.mark.parametrize("token", ["", "garbage", "a:b:c", "x" * 500])
def test_a_forged_or_garbled_token_is_refused(token, db):
    with pytest.raises(ApplicationError, match="not valid"):
        services.invitation_from_token(token=token)


def test_a_withdrawn_invitation_is_refused(organisation, owner):
    invitation = InvitationFactory(organisation=organisation, email="gone@example.pk")
    services.invitation_revoke(invitation=invitation, acting_user=owner)
    with pytest.raises(ApplicationError, match="withdrawn"):
        services.invitation_from_token(token=_token_for(invitation))


def test_an_invitation_works_only_for_the_invited_address(organisation):
    invitation = InvitationFactory(organisation=organisation, email="right@example.pk")
    stranger = UserFactory(email="wrong@example.pk")
    with pytest.raises(ApplicationError, match="right@example.pk"):
        services.invitation_accept(token=_token_for(invitation), user=stranger)
    assert not Membership.objects.filter(user=stranger).exists()
    invitation.refresh_from_db()
    assert invitation.accepted_at is None


def test_owner_changes_roles_but_an_admin_cannot(organisation, owner, admin_member, member):
    membership = Membership.objects.get(user=member)
    services.membership_role_change(membership=membership, role=Role.ADMIN, acting_user=owner)
    assert Membership.objects.get(user=member).role == Role.ADMIN
    with pytest.raises(PermissionDenied):
        services.membership_role_change(
            membership=Membership.objects.get(user=owner),
            role=Role.MEMBER,
            acting_user=admin_member,
        )
    assert Membership.objects.get(user=owner).role == Role.OWNER


def test_a_member_cannot_change_roles(organisation, owner, member):
    with pytest.raises(PermissionDenied):
        services.membership_role_change(
            membership=Membership.objects.get(user=member), role=Role.ADMIN, acting_user=member
        )
    assert Membership.objects.get(user=member).role == Role.MEMBER
    assert not AuditEvent.objects.filter(action="membership.role_changed").exists()


def test_removal_rules(organisation, owner, admin_member, member):
    other_admin = MembershipFactory(organisation=organisation, role=Role.ADMIN).user
    # an admin cannot remove another admin, nor the owner
    with pytest.raises(PermissionDenied):
        services.membership_remove(
            membership=Membership.objects.get(user=other_admin), acting_user=admin_member
        )
    with pytest.raises(ApplicationError):
        services.membership_remove(
            membership=Membership.objects.get(user=owner), acting_user=admin_member
        )
    # a member cannot remove anyone else
    with pytest.raises(PermissionDenied):
        services.membership_remove(
            membership=Membership.objects.get(user=admin_member), acting_user=member
        )
    assert Membership.objects.filter(organisation=organisation).count() == 4
    # an admin removes a member; a member may leave
    services.membership_remove(
        membership=Membership.objects.get(user=member), acting_user=admin_member
    )
    services.membership_remove(
        membership=Membership.objects.get(user=other_admin), acting_user=other_admin
    )
    assert set(organisation.memberships.values_list("user", flat=True)) == {
        owner.pk,
        admin_member.pk,
    }


def test_ownership_transfer(organisation, owner, member):
    services.ownership_transfer(
        organisation=organisation, new_owner=Membership.objects.get(user=member), acting_user=owner
    )
    assert Membership.objects.get(user=member).role == Role.OWNER
    assert Membership.objects.get(user=owner).role == Role.ADMIN
    # the former owner can no longer act as one
    with pytest.raises(PermissionDenied):
        services.ownership_transfer(
            organisation=organisation,
            new_owner=Membership.objects.get(user=owner),
            acting_user=owner,
        )


def test_ownership_transfer_to_someone_outside_is_refused(organisation, owner):
    outsider = MembershipFactory(organisation=OrganisationFactory())
    with pytest.raises(ApplicationError):
        services.ownership_transfer(
            organisation=organisation, new_owner=outsider, acting_user=owner
        )
    assert Membership.objects.get(user=owner).role == Role.OWNER
