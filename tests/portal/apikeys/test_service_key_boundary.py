"""An organisation's key answers to a person (issue 13 §2): it stops the moment that person is no
longer an owner or admin there, the owners are told, and only an owner can take it on again.
An undecodable bearer is a plain 401 (§7). Each test plays the one holding the key."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.core import mail
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from portal.apikeys.models import ApiKey
from portal.apikeys.services import apikey_create, apikey_reconfirm
from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.credits.models import CreditApplication
from portal.organisations.models import Membership, Role
from portal.organisations.services import membership_remove, membership_role_change
from sandboxes.live.access import NOT_SIGNED_IN, StreamRefused, live_stream_group
from tests.portal.api.conftest import APPLICATION, assert_error, bearer, key_client

from .helpers import ME_URL, secret_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def admins_key(organisation, owner, admin_member):
    """(key, full key) of the organisation, made by its admin."""
    return apikey_create(
        name="ci", scopes=["profile:read", "applications:write", "usage:read"],
        acting_user=admin_member, organisation=organisation,
    )  # fmt: skip


def _membership(organisation, person) -> Membership:
    return Membership.objects.get(organisation=organisation, user=person)


def _me(full_key: str):
    return APIClient().get(ME_URL, **bearer(full_key))


def test_the_key_records_who_answers_for_it(admins_key, admin_member):
    key, full = admins_key
    assert (key.created_by, key.answerable_by) == (admin_member, admin_member)
    assert _me(full).status_code == 200


@pytest.mark.parametrize("change", ["removed", "demoted", "left"])
def test_the_key_stops_on_the_next_request_once_its_person_leaves(
    organisation, owner, admin_member, admins_key, change, django_capture_on_commit_callbacks
):
    # given the organisation's key, made by an admin, working
    key, full = admins_key
    assert _me(full).status_code == 200
    mail.outbox.clear()
    # when the admin is removed, demoted to member, or leaves
    membership = _membership(organisation, admin_member)
    with django_capture_on_commit_callbacks(execute=True):
        if change == "removed":
            membership_remove(membership=membership, acting_user=owner)
        elif change == "demoted":
            membership_role_change(membership=membership, role=Role.MEMBER, acting_user=owner)
        else:
            membership_remove(membership=membership, acting_user=admin_member)
    # then the very next request with the key is a 401, with nothing falling back to the owner
    assert_error(_me(full), 401, "not_authenticated")
    client = key_client(full)
    assert_error(client.post("/api/v1/credit-applications", APPLICATION, format="json"), 401)
    assert not CreditApplication.objects.exists()
    key.refresh_from_db()
    assert key.state == "unconfirmed"
    assert key.revoked_at is None
    # and the owner is told, naming the key, without its secret
    assert [m.to for m in mail.outbox] == [[owner.email]]
    assert key.display_prefix in mail.outbox[0].body
    assert admin_member.email in mail.outbox[0].body
    assert secret_of(full) not in mail.outbox[0].body


def test_the_live_stream_refuses_the_key_once_its_person_left(
    organisation, owner, admin_member, admins_key
):
    # given the organisation's stream, open to its key
    _key, full = admins_key

    def open_stream():
        return live_stream_group(
            session_user=None,
            authorization=[f"Bearer {full}".encode()],
            ip=None,
            stream="organisation",
            organisation_public_id=organisation.public_id,
        )

    assert open_stream()
    # when the admin who made it is removed
    membership_remove(membership=_membership(organisation, admin_member), acting_user=owner)
    # then the stream is refused as "sign in again"
    with pytest.raises(StreamRefused) as refused:
        open_stream()
    assert refused.value.code == NOT_SIGNED_IN


def test_a_promotion_or_another_admin_leaving_changes_nothing(
    organisation, owner, member, admins_key
):
    # given the admin's key, and a plain member
    key, full = admins_key
    mail.outbox.clear()
    # when the member is made admin and then leaves
    membership_role_change(
        membership=_membership(organisation, member), role=Role.ADMIN, acting_user=owner
    )
    membership_remove(membership=_membership(organisation, member), acting_user=owner)
    # then the key still works, and no one is told about it
    assert _me(full).status_code == 200
    assert mail.outbox == []


def test_an_owner_re_confirms_the_key_and_answers_for_it(
    organisation, owner, admin_member, admins_key
):
    # given the key of an admin who was then demoted
    key, full = admins_key
    membership_role_change(
        membership=_membership(organisation, admin_member), role=Role.MEMBER, acting_user=owner
    )
    assert _me(full).status_code == 401
    # when the owner re-confirms it
    apikey_reconfirm(key=key, acting_user=owner, ip="198.51.100.9")
    # then it works again, in the owner's name, and the audit log says who took it on from whom
    key.refresh_from_db()
    assert key.answerable_by == owner
    assert key.created_by == admin_member  # history stays
    assert _me(full).status_code == 200
    created = key_client(full).post("/api/v1/credit-applications", APPLICATION, format="json")
    assert created.status_code == 201, created.content
    assert CreditApplication.objects.get().created_by == owner
    event = AuditEvent.objects.get(action="apikey.reconfirmed")
    assert event.actor == owner
    assert event.data == {
        "key_id": key.key_id,
        "name": key.name,
        "answerable_by": owner.email,
        "previously": admin_member.email,
    }


def test_only_an_owner_can_re_confirm(organisation, owner, admin_member, member, admins_key):
    # given the key of an admin who left, and another admin
    key, full = admins_key
    membership_remove(membership=_membership(organisation, admin_member), acting_user=owner)
    other_admin = member
    membership_role_change(
        membership=_membership(organisation, other_admin), role=Role.ADMIN, acting_user=owner
    )
    # when the other admin, or the admin who left, tries to take it on
    for person in (other_admin, admin_member):
        with pytest.raises(PermissionDenied, match="Only the organisation's owner"):
            apikey_reconfirm(key=key, acting_user=person)
    # then nothing changed: the key still answers to no one in place and is refused
    key.refresh_from_db()
    assert key.answerable_by == admin_member
    assert not AuditEvent.objects.filter(action="apikey.reconfirmed").exists()
    assert _me(full).status_code == 401


def test_a_revoked_key_cannot_be_re_confirmed(organisation, owner, admins_key):
    key, full = admins_key
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=key.created_at)
    with pytest.raises(ApplicationError, match="revoked or expired"):
        apikey_reconfirm(key=key, acting_user=owner)
    assert not AuditEvent.objects.filter(action="apikey.reconfirmed").exists()
    assert _me(full).status_code == 401


def test_re_confirm_from_the_key_page(client, organisation, owner, admin_member, admins_key):
    # given the key of an admin who left
    key, full = admins_key
    membership_remove(membership=_membership(organisation, admin_member), acting_user=owner)
    url = reverse("apikeys:reconfirm", kwargs={"public_id": key.public_id})
    # when the owner opens the key page
    client.force_login(owner)
    page = client.get(reverse("apikeys:list")).content.decode()
    # then it says the key needs them, and offers the button
    assert "Needs an owner's confirmation" in page
    assert url in page
    # and when they press it, the key works again
    assert client.post(url).status_code == 302
    assert _me(full).status_code == 200
    assert "Needs an owner" not in client.get(reverse("apikeys:list")).content.decode()


def test_an_admin_pressing_re_confirm_changes_nothing(
    client, organisation, owner, admin_member, member, admins_key
):
    key, full = admins_key
    membership_remove(membership=_membership(organisation, admin_member), acting_user=owner)
    membership_role_change(
        membership=_membership(organisation, member), role=Role.ADMIN, acting_user=owner
    )
    client.force_login(member)
    url = reverse("apikeys:reconfirm", kwargs={"public_id": key.public_id})
    response = client.post(url, follow=True)
    assert "Only the organisation&#x27;s owner" in response.content.decode()
    key.refresh_from_db()
    assert key.answerable_by == admin_member
    assert _me(full).status_code == 401


def test_re_confirm_from_the_cli(organisation, owner, admin_member, admins_key):
    key, full = admins_key
    membership_remove(membership=_membership(organisation, admin_member), acting_user=owner)
    with pytest.raises(CommandError, match="Only the organisation's owner"):
        call_command("apikey", "confirm", key.key_id, "--by", admin_member.email)
    assert _me(full).status_code == 401
    call_command("apikey", "confirm", key.display_prefix, "--by", owner.email)
    key.refresh_from_db()
    assert key.answerable_by == owner
    assert _me(full).status_code == 200
    assert AuditEvent.objects.get(action="apikey.reconfirmed").actor is None  # the CLI


# --- A key with no one to answer for it -----------------------------------------------------


def test_a_key_without_a_person_is_never_made(organisation, owner):
    # when a service (the CLI, say) makes an organisation's key and names no one
    with pytest.raises(ApplicationError, match="needs the owner or admin who answers for it"):
        apikey_create(
            name="svc", scopes=["profile:read"], acting_user=None, organisation=organisation
        )
    # then nothing is made
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(action="apikey.created").exists()


def test_a_key_made_before_anyone_answered_for_it_acts_as_no_one(organisation, owner):
    # given an organisation key as the CLI made them before: no maker recorded
    key, full = apikey_create(
        name="old", scopes=["profile:read"], acting_user=owner, organisation=organisation
    )
    ApiKey.objects.filter(pk=key.pk).update(created_by=None, answerable_by=None)
    # when it is used
    response = _me(full)
    # then it is refused, not treated as the owner's
    assert_error(response, 401, "not_authenticated")
    key.refresh_from_db()
    assert key.state == "unconfirmed"


# --- An undecodable bearer (§7) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["Bearer nac_€uro", "Bearer ключ", "Bearer nac_é", "Bearér nac_x", "Bearer \udcff"],
)
def test_a_bearer_that_is_not_ascii_is_a_plain_401(user, value):
    # when a request carries an Authorization header no key can be made of
    response = APIClient().get(ME_URL, HTTP_AUTHORIZATION=value)
    # then it is a 401 in the one error shape, never a server error
    assert_error(response, 401, "not_authenticated")


@pytest.mark.parametrize("value", ["Bearer nac_€uro".encode(), b"Bearer \xff\xfe"])
def test_the_live_stream_refuses_a_bearer_that_is_not_ascii(value):
    with pytest.raises(StreamRefused) as refused:
        live_stream_group(session_user=None, authorization=[value], ip=None, stream="user")
    assert refused.value.code == NOT_SIGNED_IN


def test_the_migration_keeps_keys_with_a_maker_and_stops_those_without(
    organisation, owner, admin_member
):
    # given two organisation keys as they were before the migration: one with its maker
    # recorded, one made by the CLI with none; neither has anyone answering for it yet
    with_maker, with_maker_full = apikey_create(
        name="ui", scopes=["profile:read"], acting_user=admin_member, organisation=organisation
    )
    no_maker, no_maker_full = apikey_create(
        name="cli", scopes=["profile:read"], acting_user=owner, organisation=organisation
    )
    ApiKey.objects.filter(pk=with_maker.pk).update(answerable_by=None)
    ApiKey.objects.filter(pk=no_maker.pk).update(answerable_by=None, created_by=None)
    # when the data migration runs
    migration = importlib.import_module("portal.apikeys.migrations.0002_service_keys_answerable")
    migration.answerable_is_the_maker(django_apps, None)
    # then the maker answers for their key, which works; the other acts as no one
    with_maker.refresh_from_db()
    assert with_maker.answerable_by == admin_member
    assert _me(with_maker_full).status_code == 200
    assert_error(_me(no_maker_full), 401, "not_authenticated")
