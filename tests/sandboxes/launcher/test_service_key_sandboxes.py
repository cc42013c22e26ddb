"""An organisation's service key reaches only its own organisation's sandboxes (issue 13 §2).

The attacker holds a service key of organisation A, made by A's owner. The same person also
owns organisation B and has a student account, each with a sandbox of its own. Through the key,
those sandboxes do not exist: 404 for every action, absent from the list, and nothing about
them changes (status, deletion, home volume, hub calls, audit, billing).
"""

import pytest
from django.test import TestCase

from portal.apikeys.scopes import ALL_SCOPES, PROGRAMME_SCOPES
from portal.audit.models import AuditEvent
from portal.credits.services import account_for_organisation, account_for_student
from portal.organisations.models import Role
from sandboxes.jobs import registered_task
from sandboxes.launcher import services
from sandboxes.launcher.models import Sandbox
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.portal.api.conftest import key_client, make_key
from tests.portal.credits.helpers import lot

from .helpers import HOUR, committed, gpus, image, profile

pytestmark = pytest.mark.django_db
API = "/api/v1"
SERVICE_SCOPES = sorted(ALL_SCOPES - PROGRAMME_SCOPES)


@pytest.fixture
def hub_calls(monkeypatch):
    """Every request the portal would make to the hub for an access token, recorded."""
    from sandboxes.launcher import hub_client as hub_module

    calls = []

    class FakeHub:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def token_create(self, user, **kwargs):
            calls.append((user, kwargs))
            return "hub-token"

    monkeypatch.setattr(hub_module, "hub_client", FakeHub)
    return calls


@pytest.fixture
def home_deletions(monkeypatch):
    """The user ids whose home volume deletion was enqueued."""
    deleted = []
    monkeypatch.setattr(registered_task("launcher.home_volume_delete"), "delay", deleted.append)
    return deleted


@pytest.fixture
def world(enqueued):
    """The owner of A and of B, who is a student too; A's service key (made by them); one
    sandbox of theirs in each place: A, B and the student allowance."""
    gpus(2)
    first = MembershipFactory(role=Role.OWNER)
    owner, own_org = first.user, first.organisation
    other_org = MembershipFactory(role=Role.OWNER, user=owner).organisation
    StudentProfileFactory(user=owner)
    for account in (
        account_for_organisation(own_org),
        account_for_organisation(other_org),
        account_for_student(owner),
    ):
        lot(account, 100 * HOUR)

    def sandbox(organisation):
        launched = committed(
            services.sandbox_launch,
            user=owner,
            image=image(),
            profile=profile("cpu-small"),
            organisation=organisation,
            name="",
            ip=None,
        )
        Sandbox.objects.filter(pk=launched.pk).update(status="stopped")  # one start at a time
        return launched

    sandboxes = {"own": sandbox(own_org), "other_org": sandbox(other_org), "student": sandbox(None)}
    assert sandboxes["student"].organisation is None
    _key, full = make_key(organisation=own_org, acting_user=owner, scopes=SERVICE_SCOPES)
    enqueued.clear()
    return {
        "owner": owner,
        "own_org": own_org,
        "other_org": other_org,
        "sandboxes": sandboxes,
        "client": key_client(full),
    }


def _snapshot(sandbox: Sandbox) -> tuple:
    sandbox.refresh_from_db()
    return (sandbox.status, sandbox.deleted_at, sandbox.organisation_id, sandbox.updated_at)


def test_the_list_holds_only_the_keys_organisation(world):
    # when the key lists sandboxes
    listed = world["client"].get(f"{API}/sandboxes").json()["results"]
    # then only the one its organisation pays for
    assert [s["id"] for s in listed] == [str(world["sandboxes"]["own"].public_id)]


@pytest.mark.parametrize("target", ["other_org", "student"])
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "", "running"),
        ("post", "/stop", "running"),
        ("post", "/start", "stopped"),
        ("delete", "?delete_home=true", "stopped"),
        ("delete", "", "stopped"),
        ("post", "/access-token", "running"),
    ],
)
def test_the_owners_other_sandboxes_do_not_exist_for_the_key(
    world, target, method, path, status, enqueued, hub_calls, home_deletions
):
    # given the owner's sandbox outside the key's organisation, in the state the action needs
    sandbox = world["sandboxes"][target]
    Sandbox.objects.filter(pk=sandbox.pk).update(status=status)
    before = _snapshot(sandbox)
    audits = AuditEvent.objects.count()
    # when the key acts on it
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = getattr(world["client"], method)(f"{API}/sandboxes/{sandbox.public_id}{path}")
    # then it is not found, and nothing happened
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"
    assert _snapshot(sandbox) == before
    assert AuditEvent.objects.count() == audits
    assert enqueued == []
    assert hub_calls == []
    assert home_deletions == []


def test_a_launch_through_the_key_bills_only_its_organisation(world):
    # given the owner's other organisation, with credits
    other = world["other_org"]
    count = Sandbox.objects.count()
    # when the key asks to launch on the other organisation's account
    response = world["client"].post(
        f"{API}/sandboxes",
        {"image": "python-cpu", "profile": "cpu-small", "organisation": str(other.public_id)},
        format="json",
    )
    # then it is not found, and nothing is launched
    assert response.status_code == 404
    assert Sandbox.objects.count() == count
    # and a launch that names no organisation is billed to the key's, not to the student
    # allowance the same person also has
    Sandbox.objects.filter(pk=world["sandboxes"]["own"].pk).update(status="stopped")
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = world["client"].post(
            f"{API}/sandboxes", {"image": "python-cpu", "profile": "cpu-small"}, format="json"
        )
    assert response.status_code == 202, response.content
    assert response.json()["organisation"] == str(world["own_org"].public_id)


def test_the_keys_own_sandbox_still_works(world, hub_calls):
    # given the sandbox the key's organisation pays for, running
    sandbox = world["sandboxes"]["own"]
    Sandbox.objects.filter(pk=sandbox.pk).update(status="running")
    # when the key reads it and asks for an access token
    client = world["client"]
    assert client.get(f"{API}/sandboxes/{sandbox.public_id}").status_code == 200
    response = client.post(f"{API}/sandboxes/{sandbox.public_id}/access-token")
    # then it gets them, in the owner's name
    assert response.status_code == 201, response.content
    assert len(hub_calls) == 1
    issued = AuditEvent.objects.get(action="sandbox.access_token_issued")
    assert issued.actor == world["owner"]


# --- Scopes of their own: access tokens and home deletion -----------------------------------


def _own_sandbox(status: str):
    owner = MembershipFactory(role=Role.OWNER)
    lot(account_for_organisation(owner.organisation), 100 * HOUR)
    sandbox = committed(
        services.sandbox_launch,
        user=owner.user,
        image=image(),
        profile=profile("cpu-small"),
        organisation=owner.organisation,
        name="",
        ip=None,
    )
    Sandbox.objects.filter(pk=sandbox.pk).update(status=status)
    return owner.user, sandbox


def test_an_access_token_needs_the_access_scope(enqueued, hub_calls):
    # given a running sandbox and its person's key that may launch and stop, nothing more
    user, sandbox = _own_sandbox("running")
    _key, full = make_key(user=user, scopes=["sandboxes:read", "sandboxes:write"])
    url = f"{API}/sandboxes/{sandbox.public_id}/access-token"
    # when the key asks for a token to the server
    response = key_client(full).post(url)
    # then it is refused, naming the scope, and the hub is never asked
    assert response.status_code == 403
    assert "sandboxes:access" in response.json()["error"]["message"]
    assert hub_calls == []
    assert not AuditEvent.objects.filter(action="sandbox.access_token_issued").exists()
    # and with the scope it is given
    _key, full = make_key(user=user, scopes=["sandboxes:access"])
    assert key_client(full).post(url).status_code == 201
    assert len(hub_calls) == 1


def test_deleting_the_home_needs_its_own_scope(enqueued, home_deletions):
    # given a stopped sandbox and its person's key with sandboxes:write alone
    user, sandbox = _own_sandbox("stopped")
    _key, full = make_key(user=user, scopes=["sandboxes:read", "sandboxes:write"])
    client = key_client(full)
    url = f"{API}/sandboxes/{sandbox.public_id}"
    # when the key deletes the sandbox and the home folder
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.delete(f"{url}?delete_home=true")
    # then it is refused, naming the scope, and nothing is deleted
    assert response.status_code == 403
    assert "sandboxes:delete-home" in response.json()["error"]["message"]
    sandbox.refresh_from_db()
    assert sandbox.deleted_at is None
    assert home_deletions == []
    assert not AuditEvent.objects.filter(action="sandbox.deleted").exists()
    # and with the scope, the home goes too
    _key, full = make_key(user=user, scopes=["sandboxes:write", "sandboxes:delete-home"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert key_client(full).delete(f"{url}?delete_home=true").status_code == 204
    assert home_deletions == [user.pk]


def test_a_plain_delete_keeps_needing_only_the_write_scope(enqueued, home_deletions):
    user, sandbox = _own_sandbox("stopped")
    _key, full = make_key(user=user, scopes=["sandboxes:write"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = key_client(full).delete(f"{API}/sandboxes/{sandbox.public_id}")
    assert response.status_code == 204
    sandbox.refresh_from_db()
    assert sandbox.deleted_at is not None
    assert home_deletions == []
