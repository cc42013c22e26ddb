"""Organisation pages over HTTP: visibility, the role matrix, and refusals that change nothing."""

import pytest
from django.urls import reverse

from portal.organisations.models import Invitation, Membership, Role
from tests.factories import InvitationFactory, MembershipFactory, OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db


def _detail(organisation):
    return reverse("organisations:detail", kwargs={"slug": organisation.slug})


def test_anonymous_is_sent_to_sign_in(client, organisation):
    response = client.get(_detail(organisation))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_another_organisations_page_is_not_found(client, organisation, owner):
    outsider = MembershipFactory(organisation=OrganisationFactory(), role=Role.OWNER).user
    client.force_login(outsider)
    assert client.get(_detail(organisation)).status_code == 404
    response = client.post(
        reverse("organisations:invitation_create", kwargs={"slug": organisation.slug}),
        {"email": "x@example.pk", "role": "member"},
    )
    assert response.status_code == 404
    assert not Invitation.objects.exists()


@pytest.mark.parametrize(
    ("role", "sees_invite_form"), [("owner", True), ("admin", True), ("member", False)]
)
def test_each_role_sees_its_page(client, organisation, role, sees_invite_form):
    person = MembershipFactory(organisation=organisation, role=role).user
    client.force_login(person)
    response = client.get(_detail(organisation))
    assert response.status_code == 200
    assert ("Invite a teammate" in response.content.decode()) is sees_invite_form


def test_owner_invites_through_the_page(
    client, organisation, owner, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            reverse("organisations:invitation_create", kwargs={"slug": organisation.slug}),
            {"email": "dev@example.pk", "role": "admin"},
        )
    assert response.status_code == 302
    assert Invitation.objects.get().role == Role.ADMIN
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    "data",
    [{"email": "not-an-address", "role": "member"}, {"email": "a@b.pk", "role": "owner"}, {}],
)
def test_bad_invitation_input_is_refused(client, organisation, owner, data):
    client.force_login(owner)
    response = client.post(
        reverse("organisations:invitation_create", kwargs={"slug": organisation.slug}), data
    )
    assert response.status_code == 400
    assert response.context["invite_form"].errors
    assert not Invitation.objects.exists()


def test_a_member_trying_an_owners_action_is_told_no(client, organisation, owner, member):
    client.force_login(member)
    owner_slug = Membership.objects.get(user=owner).user.hub_username
    expected = {"transfer": "Only the organisation's owner", "remove": "owner cannot be removed"}
    for name, message in expected.items():
        url = reverse(
            f"organisations:{name}",
            kwargs={"slug": organisation.slug, "hub_username": owner_slug},
        )
        response = client.post(url, follow=True)
        assert message in " ".join(str(m) for m in response.context["messages"])
    response = client.post(
        reverse("organisations:invitation_create", kwargs={"slug": organisation.slug}),
        {"email": "x@example.pk", "role": "member"},
    )
    assert response.status_code == 403
    assert "owner or an admin" in response.content.decode()
    assert Membership.objects.get(user=owner).role == Role.OWNER
    assert Membership.objects.get(user=member).role == Role.MEMBER
    assert not Invitation.objects.exists()


def test_get_is_not_allowed_on_actions(client, organisation, owner, member):
    client.force_login(owner)
    url = reverse(
        "organisations:remove",
        kwargs={"slug": organisation.slug, "hub_username": member.hub_username},
    )
    assert client.get(url).status_code == 405
    assert Membership.objects.filter(user=member).exists()


def test_invitation_link_for_a_newcomer_offers_signup_and_marks_the_address_proven(
    client, organisation
):
    invitation = InvitationFactory(organisation=organisation, email="fresh@example.pk")
    from portal.organisations.services import invitation_token

    response = client.get(
        reverse("organisations:invitation_accept", kwargs={"token": invitation_token(invitation)})
    )
    assert response.status_code == 200
    assert reverse("account_signup") in response.content.decode()
    assert client.session["account_verified_email"] == "fresh@example.pk"


@pytest.mark.parametrize("token", ["nonsense", "a" * 300])
def test_a_broken_invitation_link_says_so(client, token):
    response = client.get(reverse("organisations:invitation_accept", kwargs={"token": token}))
    assert response.status_code == 410
    assert "not valid" in response.content.decode()


def test_a_used_invitation_link_says_so(client, organisation):
    from portal.organisations.services import invitation_accept, invitation_token

    invitation = InvitationFactory(organisation=organisation, email="once@example.pk")
    invitee = UserFactory(email="once@example.pk")
    invitation_accept(token=invitation_token(invitation), user=invitee)
    client.force_login(invitee)
    response = client.get(
        reverse("organisations:invitation_accept", kwargs={"token": invitation_token(invitation)})
    )
    assert response.status_code == 410
    assert "already been used" in response.content.decode()
