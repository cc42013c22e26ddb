"""The API keys page over HTTP: who may make which key, the key shown once and stored only as an
HMAC, refusals that change nothing, revocation that bites on the very next request."""

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from portal.apikeys.models import ApiKey
from portal.apikeys.services import apikey_create
from portal.apikeys.tokens import secret_hash
from portal.organisations.models import Role
from tests.factories import PASSWORD, MembershipFactory, OrganisationFactory, UserFactory

from .helpers import api_get, assert_secret_stored_nowhere, create_through_page, secret_of

pytestmark = pytest.mark.django_db


def _personal_key(person, **overrides):
    options = {"name": "laptop", "scopes": ["profile:read"], **overrides}
    return apikey_create(acting_user=person, user=person, **options)


def _revoke_url(key):
    return reverse("apikeys:revoke", kwargs={"public_id": key.public_id})


# --- Who may do what ----------------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in(client, user):
    # given a key and no one signed in
    key, _ = _personal_key(user)
    # when the page is opened, a key is posted or a revocation tried
    responses = [
        client.get(reverse("apikeys:list")),
        create_through_page(client),
        client.post(_revoke_url(key)),
    ]
    # then each is sent to sign in, and nothing changes
    for response in responses:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    assert ApiKey.objects.count() == 1
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_page_and_the_nav_link_are_there_for_a_signed_in_person(client, user):
    # given a signed-in person
    client.force_login(user)
    # when they open the page
    response = client.get("/api-keys/")
    # then it offers the form, the docs link and the curl example, and the nav links to it
    page = response.content.decode()
    assert response.status_code == 200
    assert 'href="/api-keys/"' in page
    assert 'href="/api/docs/"' in page
    assert 'curl -H "Authorization: Bearer &lt;key&gt;" http://testserver/api/v1/me' in page
    assert "No keys yet." in page
    assert response["Cache-Control"].count("no-store") == 1


def test_a_member_makes_a_personal_key(client, organisation, member):
    # given a plain member of an organisation
    client.force_login(member)
    # when they make a key for themselves
    response = create_through_page(client)
    # then it is theirs
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert (key.user, key.organisation, key.created_by) == (member, None, member)
    assert key.scopes == ["profile:read"]


def test_a_member_cannot_make_an_organisation_key(client, organisation, member):
    # given a plain member, whose organisation is not offered as an owner
    client.force_login(member)
    offered = dict(client.get("/api-keys/").context["form"].fields["owner"].choices)
    assert list(offered) == ["personal"]
    # when they post the organisation's id anyway
    response = create_through_page(client, owner=str(organisation.public_id))
    # then they are told why, on the owner field, and no key is made
    assert response.status_code == 400
    assert "owner or admin" in response.context["form"].errors["owner"][0]
    assert "owner or admin" in response.content.decode()
    assert "created" not in response.context or response.context["created"] is None
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_an_owner_or_admin_makes_an_organisation_key(client, organisation, role):
    # given an owner or admin of the organisation
    person = MembershipFactory(organisation=organisation, role=role).user
    client.force_login(person)
    # when they make a key for the organisation
    response = create_through_page(
        client, owner=str(organisation.public_id), scopes=["credits:read", "usage:read"]
    )
    # then the organisation holds it, and the page says so
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert (key.user, key.organisation, key.created_by) == (None, organisation, person)
    assert key.scopes == ["credits:read", "usage:read"]
    row = response.content.decode().split(f'data-key="{key.key_id}"')[1].split("</tr>")[0]
    assert organisation.legal_name in row


def test_an_organisation_key_that_works_answers_as_the_organisation(client, organisation, owner):
    # given an organisation key made on the page
    client.force_login(owner)
    response = create_through_page(client, owner=str(organisation.public_id))
    full_key = response.context["created"][1]
    # when it is used
    answer = api_get(full_key)
    # then the API answers as the organisation
    assert answer.status_code == 200
    assert answer.json()["kind"] == "organisation"


# --- The key is shown once, stored as an HMAC ---------------------------------------------


def test_the_full_key_is_shown_once_and_only_its_hmac_is_stored(client, user):
    # given a signed-in person
    client.force_login(user)
    # when they make a key
    response = create_through_page(client, name="nightly export")
    # then the response shows the full key once, in a read-only field, with the warning
    assert response.status_code == 200
    key, full_key = response.context["created"]
    page = response.content.decode()
    assert page.count(full_key) == 1
    assert f'value="{full_key}" readonly' in page
    assert "Copy it now: it will not be shown again" in page
    assert "no-store" in response["Cache-Control"]
    # and the key works
    assert api_get(full_key).status_code == 200
    # and the database holds only its HMAC
    secret = secret_of(full_key)
    stored = ApiKey.objects.get()
    assert stored.secret_hash != secret
    assert stored.secret_hash == secret_hash(secret)
    assert_secret_stored_nowhere(full_key)
    # and neither the session nor a message carries it
    assert secret not in str(dict(client.session))
    assert not list(response.context["messages"])
    # and the list page afterwards shows only its prefix
    again = client.get(reverse("apikeys:list")).content.decode()
    assert key.display_prefix in again
    assert "nightly export" in again
    assert full_key not in again
    assert secret not in again
    assert "Copy it now" not in again


def test_the_list_shows_only_keys_the_person_may_manage(client, organisation, owner, member):
    # given keys of the owner, of the organisation, of the member, and of a stranger
    own, _ = _personal_key(owner, name="owner's own")
    org_key, _ = apikey_create(
        name="org service", scopes=["credits:read"], acting_user=owner, organisation=organisation
    )
    _personal_key(member, name="member's own")
    stranger = UserFactory()
    _personal_key(stranger, name="stranger's")
    other_org = OrganisationFactory()
    MembershipFactory(organisation=other_org, user=stranger, role=Role.OWNER)
    apikey_create(
        name="other org", scopes=["credits:read"], acting_user=stranger, organisation=other_org
    )
    # when the owner and the member look
    client.force_login(owner)
    owners_view = list(client.get("/api-keys/").context["keys"])
    client.force_login(member)
    members_view = list(client.get("/api-keys/").context["keys"])
    # then the owner sees theirs and the organisation's; the member only their own
    assert {k.name for k in owners_view} == {"owner's own", "org service"}
    assert {k.name for k in members_view} == {"member's own"}
    assert org_key in owners_view
    assert own in owners_view


def test_the_list_shows_each_keys_details_and_state(client, user):
    # given an active key that was used, a revoked one and an expired one
    used, _ = _personal_key(user, name="used", scopes=["profile:read", "credits:read"])
    ApiKey.objects.filter(pk=used.pk).update(
        last_used_at=timezone.now(), last_used_ip="203.0.113.9"
    )
    revoked, _ = _personal_key(user, name="revoked")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    expired, _ = _personal_key(user, name="expired")
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    client.force_login(user)
    # when the list is shown
    page = client.get("/api-keys/").content.decode()

    def row(key):
        return page.split(f'data-key="{key.key_id}"')[1].split("</tr>")[0]

    # then each row has its prefix, scopes, last use, and state; only live keys can be revoked
    assert used.display_prefix in row(used)
    assert "<code>credits:read</code>, <code>profile:read</code>" in row(used)
    assert "203.0.113.9" in row(used)
    assert "Active" in row(used)
    assert _revoke_url(used) in row(used)
    assert "Revoked" in row(revoked)
    assert _revoke_url(revoked) not in row(revoked)
    assert "Expired" in row(expired)
    assert "Never" in row(expired)
    assert 'data-confirm="Revoke the key' in row(used)


# --- Refusals change nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["profile:read", "root:everything"]}, "scopes"),
        ({"expires_in_days": "0"}, "expires_in_days"),
        ({"expires_in_days": "400"}, "expires_in_days"),
        ({"expires_in_days": "soon"}, "expires_in_days"),
        ({"owner": "someone-else"}, "owner"),
    ],
)
def test_bad_input_is_refused_on_its_field(client, user, overrides, field):
    # given a signed-in person
    client.force_login(user)
    # when they post something wrong
    response = create_through_page(client, **overrides)
    # then the page answers 400 with the message on that field, and nothing is made
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field]
    assert 'class="field has-error"' in response.content.decode()
    assert response.context["created"] is None
    assert not ApiKey.objects.exists()


def test_a_programme_scope_is_refused_to_a_non_manager(client, user):
    # given a person who is not a programme manager; the programme scopes are not offered
    client.force_login(user)
    offered = dict(client.get("/api-keys/").context["form"].fields["scopes"].choices)
    assert "programme:read" not in offered
    assert "profile:read" in offered
    # when they post one anyway
    response = create_through_page(client, scopes=["profile:read", "programme:write"])
    # then it is refused on the scopes field and nothing is made
    assert response.status_code == 400
    assert "programme:write" in response.context["form"].errors["scopes"][0]
    assert not ApiKey.objects.exists()


def test_a_programme_manager_gets_programme_scopes_but_their_organisation_does_not(
    client, organisation, programme_manager
):
    # given a programme manager who also owns an organisation
    MembershipFactory(organisation=organisation, user=programme_manager, role=Role.OWNER)
    client.force_login(programme_manager)  # a session that passed MFA
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})  # and recently
    # when they make a personal key with a programme scope (for 30 days at most)
    personal = create_through_page(client, scopes=["programme:read"], expires_in_days="30")
    # then it is made
    assert personal.status_code == 200
    assert ApiKey.objects.get().scopes == ["programme:read"]
    # when they ask the same for the organisation
    org = create_through_page(
        client, owner=str(organisation.public_id), scopes=["programme:read"], expires_in_days="30"
    )
    # then the service refuses, on the scopes field, and nothing more is made
    assert org.status_code == 400
    assert org.context["form"].errors["scopes"] == ["This key cannot have: programme:read."]
    assert ApiKey.objects.count() == 1


def test_a_suspended_organisation_gets_no_key(client, organisation, owner):
    # given an organisation that was suspended
    organisation.is_active = False
    organisation.save()
    client.force_login(owner)
    # when its owner asks for a key for it
    response = create_through_page(client, owner=str(organisation.public_id))
    # then the service refuses and nothing is made
    assert response.status_code == 400
    assert "scopes" in response.context["form"].errors
    assert not ApiKey.objects.exists()


# --- Revocation ---------------------------------------------------------------------------


def test_a_revoked_key_is_refused_on_the_very_next_request(client, user):
    # given a key that works
    key, full_key = _personal_key(user)
    assert api_get(full_key).status_code == 200
    client.force_login(user)
    # when its owner revokes it on the page
    response = client.post(_revoke_url(key), follow=True)
    # then they are told, the key is revoked, and the next request with it answers 401
    assert response.redirect_chain == [(reverse("apikeys:list"), 302)]
    assert "was revoked" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    answer = api_get(full_key)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "not_authenticated"


def test_revoking_twice_says_so(client, user):
    # given a revoked key
    key, _ = _personal_key(user)
    client.force_login(user)
    client.post(_revoke_url(key))
    revoked_at = ApiKey.objects.get().revoked_at
    # when it is revoked again
    response = client.post(_revoke_url(key), follow=True)
    # then the person is told, and the revocation time does not move
    assert "already revoked" in response.content.decode()
    assert ApiKey.objects.get().revoked_at == revoked_at


@pytest.mark.parametrize("who", ["stranger", "member"])
def test_revoking_a_key_one_may_not_manage_is_not_found(client, organisation, owner, member, who):
    # given the owner's own key and the organisation's key
    own, own_full = _personal_key(owner)
    org_key, org_full = apikey_create(
        name="svc", scopes=["profile:read"], acting_user=owner, organisation=organisation
    )
    client.force_login(UserFactory() if who == "stranger" else member)
    # when someone else (a stranger, or a plain member) tries to revoke them
    responses = [client.post(_revoke_url(own)), client.post(_revoke_url(org_key))]
    # then the keys are not found, and both still work
    assert [r.status_code for r in responses] == [404, 404]
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()
    assert api_get(own_full).status_code == 200
    assert api_get(org_full).status_code == 200


def test_an_admin_revokes_the_organisations_key(client, organisation, owner, admin_member):
    # given a key the owner made for the organisation
    key, full_key = apikey_create(
        name="svc", scopes=["profile:read"], acting_user=owner, organisation=organisation
    )
    client.force_login(admin_member)
    # when an admin revokes it
    response = client.post(_revoke_url(key))
    # then it is revoked
    assert response.status_code == 302
    assert api_get(full_key).status_code == 401


def test_revoke_takes_only_a_post(client, user):
    key, _ = _personal_key(user)
    client.force_login(user)
    assert client.get(_revoke_url(key)).status_code == 405
    assert ApiKey.objects.get().revoked_at is None


# --- Telling the owner --------------------------------------------------------------------


def test_making_a_key_emails_its_owner_without_the_key(
    client, user, django_capture_on_commit_callbacks
):
    # given a signed-in person
    client.force_login(user)
    # when they make a key
    with django_capture_on_commit_callbacks(execute=True):
        response = create_through_page(client, name="deploy bot")
    # then one e-mail goes to them, naming the key by its prefix, never carrying the secret
    key, full_key = response.context["created"]
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [user.email]
    assert "deploy bot" in message.subject
    assert key.display_prefix in message.body
    assert "/api-keys/" in message.body
    assert secret_of(full_key) not in message.subject + message.body


def test_an_organisation_key_emails_its_owner_and_admins(
    client, organisation, owner, admin_member, member, django_capture_on_commit_callbacks
):
    # given an admin of an organisation with an owner and a plain member
    client.force_login(admin_member)
    # when the admin makes a key for the organisation
    with django_capture_on_commit_callbacks(execute=True):
        create_through_page(client, owner=str(organisation.public_id))
    # then the owner and the admins are told; the plain member is not
    assert sorted(m.to[0] for m in mail.outbox) == sorted([owner.email, admin_member.email])


def test_a_refused_key_sends_no_email(client, user, django_capture_on_commit_callbacks):
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        create_through_page(client, expires_in_days="0")
    assert mail.outbox == []
