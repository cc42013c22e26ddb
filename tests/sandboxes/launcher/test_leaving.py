"""Leaving stops what you run: a person removed from an organisation loses the sandboxes they run
on its account (their home volume stays), and a removal, a suspension or a portal sign-out ends
their hub session (hub tokens revoked, the hub user deleted so its login cookie finds nobody,
the hub's OIDC tokens at the portal revoked)."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client, TestCase
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from portal.audit.models import AuditEvent
from portal.core.exceptions import PermissionDenied
from portal.credits.services import account_for_student
from portal.organisations import services as organisations
from portal.organisations.models import Membership, Role
from portal.users.oidc import hub_client_ensure
from sandboxes.launcher import leaving, services
from sandboxes.launcher.entitlement import launch_check
from sandboxes.launcher.hub_client import HubClient
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.selectors import holder_for
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.portal.credits.helpers import lot
from tests.sandboxes.hub import running_hub
from tests.sandboxes.spawner.conftest import docker_client  # noqa: F401

from .helpers import (
    committed,
    funded_founder,
    funded_student,
    gpus,
    image,
    profile,
    tasks_recorded,
)

pytestmark = pytest.mark.django_db
Status = Sandbox.Status


@pytest.fixture(autouse=True)
def hub_session_tasks(request, _no_hub_tasks, monkeypatch):
    """hub_session_end is recorded like the other hub tasks, except for the real-hub test."""
    if "real_hub" in request.fixturenames:
        return _no_hub_tasks
    return tasks_recorded(monkeypatch, _no_hub_tasks, "hub_session_end")


def _ended(calls) -> list[int]:
    return [args[0] for name, args, _kwargs in calls if name == "hub_session_end"]


def _stops(calls) -> list[int]:
    return [args[0] for name, args, _kwargs in calls if name == "sandbox_stop"]


def _launch(user, organisation=None, slug="cpu-small"):
    return committed(
        services.sandbox_launch,
        user=user,
        image=image(),
        profile=profile(slug),
        organisation=organisation,
    )


def _running(sandbox) -> Sandbox:
    services.sandbox_mark_running(sandbox_id=sandbox.pk)
    return Sandbox.objects.get(pk=sandbox.pk)


@pytest.fixture
def startup_and_colleague():
    owner = funded_founder()
    organisation = Membership.objects.get(user=owner).organisation
    colleague = funded_founder(organisation=organisation)
    return organisation, owner, colleague


def test_removal_stops_only_the_sandboxes_on_that_organisations_account(
    startup_and_colleague, hub_session_tasks
):
    # given a colleague who runs one sandbox on the startup, one on another organisation of
    # theirs and one on their student allowance
    organisation, owner, colleague = startup_and_colleague
    other_org_owner = funded_founder()
    other = Membership.objects.get(user=other_org_owner).organisation
    MembershipFactory(organisation=other, user=colleague, role=Role.MEMBER)
    StudentProfileFactory(user=colleague)
    lot(account_for_student(colleague), 36_000)
    on_startup = _running(_launch(colleague, organisation))
    on_other = _running(_launch(colleague, other))
    on_allowance = _running(_launch(colleague))
    hub_session_tasks.clear()

    # when the owner removes them from the startup
    membership = Membership.objects.get(organisation=organisation, user=colleague)
    committed(organisations.membership_remove, membership=membership, acting_user=owner)

    # then only the startup's sandbox stops, its home volume is not touched ...
    assert Sandbox.objects.get(pk=on_startup.pk).status == Status.STOPPING
    assert Sandbox.objects.get(pk=on_other.pk).status == Status.RUNNING
    assert Sandbox.objects.get(pk=on_allowance.pk).status == Status.RUNNING
    assert _stops(hub_session_tasks) == [on_startup.pk]
    assert not [c for c in hub_session_tasks if c[0] == "home_volume_delete"]
    assert "no longer belong" in Sandbox.objects.get(pk=on_startup.pk).status_message
    # ... the removal is audited with the sandbox's id, and their hub session is ended
    event = AuditEvent.objects.get(action="membership.removed")
    assert event.data["sandboxes_stopped"] == [str(on_startup.public_id)]
    assert _ended(hub_session_tasks) == [colleague.pk]


def test_a_member_who_leaves_stops_their_sandboxes_there(startup_and_colleague, hub_session_tasks):
    organisation, _owner, colleague = startup_and_colleague
    sandbox = _running(_launch(colleague, organisation))
    hub_session_tasks.clear()

    membership = Membership.objects.get(organisation=organisation, user=colleague)
    committed(organisations.membership_remove, membership=membership, acting_user=colleague)

    assert Sandbox.objects.get(pk=sandbox.pk).status == Status.STOPPING
    assert _stops(hub_session_tasks) == [sandbox.pk]
    assert _ended(hub_session_tasks) == [colleague.pk]


def test_a_queued_sandbox_of_a_removed_member_leaves_the_queue(startup_and_colleague):
    # given the only GPU is busy and the colleague waits for one on the startup's account
    organisation, owner, colleague = startup_and_colleague
    gpus(1)
    _running(_launch(owner, organisation, slug="gpu-1"))
    queued = _launch(colleague, organisation, slug="gpu-1")
    assert queued.status == Status.QUEUED

    membership = Membership.objects.get(organisation=organisation, user=colleague)
    committed(organisations.membership_remove, membership=membership, acting_user=owner)

    assert Sandbox.objects.get(pk=queued.pk).status == Status.STOPPED


def test_a_role_change_that_keeps_the_right_to_run_stops_nothing(
    startup_and_colleague, hub_session_tasks
):
    # given an admin running a sandbox (every role may run on the account)
    organisation, owner, colleague = startup_and_colleague
    Membership.objects.filter(user=colleague).update(role=Role.ADMIN)
    sandbox = _running(_launch(colleague, organisation))
    hub_session_tasks.clear()

    # when they are made a member, and the owner hands the organisation to them
    membership = Membership.objects.get(organisation=organisation, user=colleague)
    committed(
        organisations.membership_role_change,
        membership=membership,
        role=Role.MEMBER,
        acting_user=owner,
    )
    owners_sandbox = _running(_launch(owner, organisation))
    hub_session_tasks.clear()
    committed(
        organisations.ownership_transfer,
        organisation=organisation,
        new_owner=membership,
        acting_user=owner,
    )

    # then nobody's sandbox stops and no hub session ends
    assert Sandbox.objects.get(pk=sandbox.pk).status == Status.RUNNING
    assert Sandbox.objects.get(pk=owners_sandbox.pk).status == Status.RUNNING
    assert hub_session_tasks == []


def test_a_launch_that_raced_a_removal_is_refused_under_the_lock(startup_and_colleague):
    # given a launch that chose its holder (the startup) just before the removal committed
    organisation, owner, colleague = startup_and_colleague
    holder = holder_for(user=colleague, organisation=organisation)
    Membership.objects.filter(organisation=organisation, user=colleague).delete()

    # when it checks again under the person's lock, it is refused and creates nothing
    with pytest.raises(PermissionDenied):
        launch_check(user=colleague, holder=holder, image=image(), profile=profile("cpu-small"))
    assert not Sandbox.objects.filter(user=colleague).exists()


# --- The hub session ends: who enqueues it --------------------------------------------------


def _hub_tokens_for(user, application) -> None:
    access = AccessToken.objects.create(
        user=user,
        application=application,
        token=f"access-{user.pk}",
        expires=timezone.now() + dt.timedelta(hours=1),
        scope="openid profile email",
    )
    RefreshToken.objects.create(
        user=user, application=application, token=f"refresh-{user.pk}", access_token=access
    )


@pytest.fixture
def hub_application():
    application, _changed = hub_client_ensure(
        client_id="hub", client_secret="hub-secret", hub_public_url="http://hub.localhost:8001"
    )
    return application


def test_a_portal_sign_out_revokes_the_hubs_tokens_and_ends_the_hub_session(
    client, startup_and_colleague, hub_application, hub_session_tasks
):
    # given a person who has a hub user (a sandbox of theirs was started) and whose hub sign-in
    # holds an access and a refresh token from the portal
    organisation, _owner, colleague = startup_and_colleague
    _launch(colleague, organisation)
    _hub_tokens_for(colleague, hub_application)
    hub_session_tasks.clear()
    client.force_login(colleague)

    # when they sign out of the portal
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(reverse("account_logout"))

    # then the hub can neither use nor refresh what it held, and the hub session is ended
    assert response.status_code == 302
    assert not AccessToken.objects.filter(user=colleague).exists()
    assert not RefreshToken.objects.filter(user=colleague, revoked__isnull=True).exists()
    assert _ended(hub_session_tasks) == [colleague.pk]


def test_a_sign_out_of_someone_who_never_had_a_sandbox_costs_no_task(
    client, owner, hub_session_tasks
):
    client.force_login(owner)
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post(reverse("account_logout"))
    assert _ended(hub_session_tasks) == []


def test_suspensions_end_the_hub_sessions(
    startup_and_colleague, programme_manager, hub_application, hub_session_tasks
):
    from portal.suspension.services import suspend

    # given a startup whose two members ran sandboxes, and a student who did
    organisation, owner, colleague = startup_and_colleague
    _running(_launch(owner, organisation))
    _running(_launch(colleague, organisation))
    student = funded_student()
    _running(_launch(student))
    _hub_tokens_for(student, hub_application)
    hub_session_tasks.clear()

    # when the programme suspends the organisation, and the student
    committed(
        suspend,
        subject=organisation,
        reason="Abuse",
        acting_user=programme_manager,
    )
    committed(suspend, subject=student, reason="Abuse", acting_user=programme_manager)

    # then every one of them has their hub session ended, and the student's hub tokens are gone
    assert sorted(_ended(hub_session_tasks)) == sorted([owner.pk, colleague.pk, student.pk])
    assert not AccessToken.objects.filter(user=student).exists()


# --- The hub session ends: what is asked of the hub ------------------------------------------


class FakeHub:
    """The hub API as far as hub_session_end uses it, recording every call."""

    def __init__(self, *, servers=None, tokens=None):
        self.servers = servers or {}
        self.tokens = tokens or []
        self.calls: list[tuple[str, str]] = []
        self.user_exists = True

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/hub/api")
        self.calls.append((request.method, path))
        if request.method == "GET" and path.endswith("/tokens"):
            return httpx.Response(200, json={"api_tokens": self.tokens})
        if request.method == "DELETE" and "/tokens/" in path:
            return httpx.Response(204)
        if request.method == "GET":
            return httpx.Response(200, json={"name": "x", "servers": self.servers})
        if request.method == "DELETE":
            self.user_exists = False
            return httpx.Response(204)
        return httpx.Response(404)


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub(
        tokens=[
            {"id": "a1", "note": "portal access token for sb-1", "oauth_client": "JupyterHub"},
            {"id": "a2", "note": None, "oauth_client": "Server at /user/x/sb-1/"},
            {"id": "a3", "note": "Server at /user/x/sb-1/", "oauth_client": "JupyterHub"},
        ]
    )

    def client():
        return HubClient(
            api_url="http://hub.test/hub/api",
            token="t",
            retries=0,
            transport=httpx.MockTransport(hub.handler),
        )

    monkeypatch.setattr("sandboxes.launcher.hub_client.hub_client", client)
    return hub


def _deleted_tokens(hub: FakeHub) -> list[str]:
    return [path.rsplit("/", 1)[1] for method, path in hub.calls if "/tokens/" in path]


def test_with_nothing_live_the_hub_user_is_deleted_and_its_tokens_revoked(
    fake_hub, startup_and_colleague
):
    organisation, _owner, colleague = startup_and_colleague
    sandbox = _launch(colleague, organisation)
    services.sandbox_mark_stopped(sandbox_id=sandbox.pk, reason="done")

    outcome = leaving.hub_session_end(user_id=colleague.pk, reason="auth.signed_out")

    assert outcome.hub_user_deleted
    assert outcome.tokens_revoked == 2
    assert _deleted_tokens(fake_hub) == ["a1", "a2"]  # a server's own credential is kept
    assert ("DELETE", f"/users/{colleague.hub_username}") in fake_hub.calls
    event = AuditEvent.objects.get(action="hub.session_ended")
    assert event.data["hub_user_deleted"] is True


def test_while_a_sandbox_runs_the_tokens_go_but_the_hub_user_stays(fake_hub, startup_and_colleague):
    organisation, _owner, colleague = startup_and_colleague
    _running(_launch(colleague, organisation))
    fake_hub.servers = {"sb-1": {"name": "sb-1", "ready": True}}

    outcome = leaving.hub_session_end(user_id=colleague.pk)

    assert outcome.servers_running
    assert not outcome.hub_user_deleted
    assert _deleted_tokens(fake_hub) == ["a1", "a2"]
    assert ("DELETE", f"/users/{colleague.hub_username}") not in fake_hub.calls


def test_while_a_sandbox_is_stopping_the_deletion_waits(fake_hub, startup_and_colleague):
    organisation, _owner, colleague = startup_and_colleague
    sandbox = _running(_launch(colleague, organisation))
    committed(services.sandbox_stop, sandbox=sandbox, acting_user=colleague)

    outcome = leaving.hub_session_end(user_id=colleague.pk)

    assert outcome.pending
    assert not outcome.hub_user_deleted
    assert ("DELETE", f"/users/{colleague.hub_username}") not in fake_hub.calls
    assert not AuditEvent.objects.filter(action="hub.session_ended").exists()


def test_the_task_tries_again_later_while_the_hub_is_down_then_gives_up(
    startup_and_colleague, hub_session_tasks
):
    # given a hub that cannot be reached (the test settings point at a closed port)
    from portal.celery import app
    from sandboxes.launcher.tasks import HUB_SESSION_END_RETRIES

    # the task itself (its `apply` runs it), while its later tries are recorded
    task = app.tasks["launcher.hub_session_end"]
    _organisation, _owner, colleague = startup_and_colleague
    hub_session_tasks.clear()

    # when the task runs, it raises nothing and enqueues itself again, later
    assert task.apply(args=(colleague.pk,), kwargs={"reason": "x"}).get() == "again"
    assert hub_session_tasks == [
        ("hub_session_end", (colleague.pk,), {"reason": "x", "attempt": 1, "countdown": 5})
    ]

    # and its last attempt gives up quietly
    hub_session_tasks.clear()
    last = {"reason": "x", "attempt": HUB_SESSION_END_RETRIES}
    assert task.apply(args=(colleague.pk,), kwargs=last).get() == "failed"
    assert hub_session_tasks == []


# --- Against a real hub ------------------------------------------------------------------------


@pytest.fixture
def real_hub(live_server, settings, docker_client):  # noqa: F811
    """A real JupyterHub whose OIDC provider is this portal (pytest-django's live server)."""
    with running_hub(portal_internal_url=live_server.url) as hub:
        settings.HUB_API_URL = hub.api_url
        settings.HUB_API_TOKEN = hub.api_token
        settings.HUB_PUBLIC_URL = hub.public_url
        hub_client_ensure(
            client_id=hub.env["HUB_OIDC_CLIENT_ID"],
            client_secret=hub.env["HUB_OIDC_CLIENT_SECRET"],
            hub_public_url=hub.public_url,
        )
        yield hub


def _hub_sign_in(hub, browser: httpx.Client, portal_session: str) -> None:
    """The hub's OIDC login, hop by hop: the portal's hops carry the portal's session cookie
    only, the hub's hops the hub's cookies only (two hosts, as in a browser)."""
    login = browser.get(f"{hub.public_url}/hub/oauth_login")
    assert login.status_code == 302, login.text
    authorize = httpx.get(
        login.headers["location"],
        headers={"Cookie": f"{django_settings.SESSION_COOKIE_NAME}={portal_session}"},
    )
    assert authorize.status_code == 302, authorize.text
    callback = authorize.headers["location"]
    assert callback.startswith(f"{hub.public_url}/hub/oauth_callback?code="), callback
    signed_in = browser.get(callback)
    assert signed_in.status_code == 302, signed_in.text


@pytest.mark.django_db(transaction=True)
def test_after_a_portal_sign_out_the_hub_cookie_and_tokens_no_longer_work(real_hub):
    # given a person with a hub user (made as the portal makes it at a first start), signed in
    # to the portal, then to the hub through the portal's OIDC, and holding a hub token
    hub = real_hub
    person = funded_student()
    sandbox = _launch(person)
    services.sandbox_mark_stopped(sandbox_id=sandbox.pk, reason="done")
    name = person.hub_username
    with hub.client() as api:
        assert api.post(f"/users/{name}").status_code == 201
    portal = Client()
    portal.force_login(person)
    with httpx.Client(timeout=30) as browser:
        _hub_sign_in(hub, browser, portal.cookies[django_settings.SESSION_COOKIE_NAME].value)
        home = f"{hub.public_url}/hub/home"
        assert browser.get(home).status_code == 200  # signed in to the hub
        token = HubClient().token_create(
            name, scopes=[f"read:users!user={name}"], expires_in=600, note="portal access token"
        )
        me = f"{hub.api_url}/user"
        assert httpx.get(me, headers={"Authorization": f"token {token}"}).status_code == 200
        refresh = RefreshToken.objects.get(user=person).token

        # when they sign out of the portal (the task runs at the commit: Celery is eager here)
        response = portal.post(reverse("account_logout"))
        assert response.status_code == 302

        # then the hub's login cookie finds nobody: the hub sends the browser to log in again
        again = browser.get(home)
        assert again.status_code == 302
        assert "/hub/login" in again.headers["location"]
        # the hub token is refused, and the hub user is gone (the next launch makes it again)
        assert httpx.get(me, headers={"Authorization": f"token {token}"}).status_code == 403
    with hub.client() as api:
        assert api.get(f"/users/{name}").status_code == 404
    # and the hub can no longer refresh its OIDC tokens at the portal
    refreshed = Client().post(
        "/o/token/",
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": hub.env["HUB_OIDC_CLIENT_ID"],
            "client_secret": hub.env["HUB_OIDC_CLIENT_SECRET"],
        },
    )
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.filter(user=person).exists()
    event = AuditEvent.objects.get(action="hub.session_ended")
    assert event.data["hub_user_deleted"] is True
    assert event.data["tokens_revoked"] >= 1
