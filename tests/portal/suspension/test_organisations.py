"""Suspending and reactivating an organisation: its sandboxes stop, its keys answer 401, its
people's sessions end (their open live streams close), all undone by a reactivation; what a
suspended organisation can no longer do; launches racing a suspension. On real PostgreSQL and the
real Redis channel layer."""

import json
import threading
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.urls import reverse

from portal.apikeys.models import ApiKey
from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.credits.models import CreditGrant, LedgerEntry
from portal.credits.services import account_for_organisation, adjustment_post
from portal.organisations.models import Organisation, Role
from portal.suspension.services import reactivate, suspend
from portal.users.services import programme_manager_grant
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from sandboxes.live.broadcast import organisation_group, user_group
from sandboxes.live.consumers import LiveConsumer
from tests.conftest import totp_activate
from tests.factories import PASSWORD, MembershipFactory, UserFactory
from tests.portal.api.conftest import key_client, make_key
from tests.portal.credits.helpers import lot
from tests.portal.suspension.conftest import HOUR, ME, Status, is_signed_in, signed_in
from tests.sandboxes.launcher.helpers import catalogue, committed, image, profile
from tests.sandboxes.live.conftest import live_socket

pytestmark = pytest.mark.django_db


# --- Suspending an organisation -------------------------------------------------------------


def test_suspending_an_organisation_stops_it_keys_sessions_and_is_audited(
    pm_client, programme_manager, startup, hub_tasks, django_capture_on_commit_callbacks
):
    # given the startup's people signed in, a service key that works, a sandbox running
    organisation = startup["organisation"]
    browsers = {who: signed_in(startup[who]) for who in ("owner", "admin", "member")}
    bystander = signed_in(MembershipFactory(role=Role.OWNER).user)
    assert all(is_signed_in(b) for b in browsers.values())
    _key, service_key = make_key(organisation=organisation, acting_user=startup["owner"])
    api = key_client(service_key)
    assert api.get(ME).status_code == 200
    hub_tasks.clear()
    # when a programme manager suspends it with a reason
    with django_capture_on_commit_callbacks(execute=True):
        response = pm_client.post(
            reverse("dashboard:organisation_suspend", args=[organisation.public_id]),
            {"reason": "Credit farming under investigation"},
        )
    # then it is suspended, its live sandbox is stopping in the hub, its key answers 401 and
    # its people are signed out; someone else's session is untouched
    assert response.status_code == 302
    page = pm_client.get(response["Location"])
    assert "The organisation is suspended. 1 sandbox is stopping. 3 sessions ended." in (
        page.content.decode()
    )
    organisation.refresh_from_db()
    assert organisation.is_active is False
    running = Sandbox.objects.get(pk=startup["running"].pk)
    assert running.status == Status.STOPPING
    assert running.status_message == "Suspended by the programme"
    assert hub_tasks == [
        ("sandbox_stop", (running.pk,), {"reason": {"code": "suspended", "params": {}}})
    ]
    assert api.get(ME).status_code == 401
    assert not any(is_signed_in(b) for b in browsers.values())
    assert is_signed_in(bystander)
    assert is_signed_in(pm_client)
    event = AuditEvent.objects.get(action="organisation.suspended")
    assert event.actor == programme_manager
    assert event.target_id == str(organisation.public_id)
    assert event.data["reason"] == "Credit farming under investigation"
    assert event.data["sandboxes_stopped"] == [str(running.public_id)]
    assert event.data["sessions_ended"] == 3
    assert event.data["api_keys_suspended"] == [_key.key_id]
    # and the page offers the reactivation instead
    html = page.content.decode()
    assert reverse("dashboard:organisation_reactivate", args=[organisation.public_id]) in html
    # and the key was not revoked: nothing was deleted
    assert ApiKey.objects.get(pk=_key.pk).revoked_at is None


def test_reactivating_an_organisation_restores_its_keys_and_sign_in(
    pm_client, programme_manager, startup
):
    organisation = startup["organisation"]
    _key, service_key = make_key(organisation=organisation, acting_user=startup["owner"])
    api = key_client(service_key)
    suspend(subject=organisation, reason="check", acting_user=programme_manager)
    assert api.get(ME).status_code == 401

    response = pm_client.post(
        reverse("dashboard:organisation_reactivate", args=[organisation.public_id]),
        {"reason": "Cleared"},
    )

    assert response.status_code == 302
    organisation.refresh_from_db()
    assert organisation.is_active is True
    assert api.get(ME).status_code == 200
    browser = Client()
    assert browser.login(email=startup["member"].email, password=PASSWORD)
    assert is_signed_in(browser)
    event = AuditEvent.objects.get(action="organisation.reactivated")
    assert (event.actor, event.data["reason"]) == (programme_manager, "Cleared")
    assert event.data["api_keys_restored"] == [_key.key_id]
    # the stopped sandbox stays stopped: its owner starts it again
    assert Sandbox.objects.get(pk=startup["running"].pk).status == Status.STOPPING


def test_suspension_is_idempotent(pm_client, programme_manager, startup, hub_tasks):
    organisation = startup["organisation"]
    url = reverse("dashboard:organisation_suspend", args=[organisation.public_id])
    pm_client.post(url, {"reason": "first"})
    hub_tasks.clear()
    response = pm_client.post(url, {"reason": "second"}, follow=True)
    assert response.status_code == 200
    assert "Nothing to do" in response.content.decode()
    assert AuditEvent.objects.filter(action="organisation.suspended").count() == 1
    assert hub_tasks == []
    again = reactivate(subject=organisation, reason="ok", acting_user=programme_manager)
    assert again.changed
    assert not reactivate(subject=organisation, reason="ok", acting_user=programme_manager).changed
    assert AuditEvent.objects.filter(action="organisation.reactivated").count() == 1


def _nothing_changed(startup, api, browsers) -> None:
    startup["organisation"].refresh_from_db()
    assert startup["organisation"].is_active is True
    assert Sandbox.objects.get(pk=startup["running"].pk).status == Status.RUNNING
    assert api.get(ME).status_code == 200
    assert all(is_signed_in(b) for b in browsers)
    assert not AuditEvent.objects.filter(action__startswith="organisation.suspend").exists()


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("no reason", 400),
        ("blank reason", 400),
        ("GET", 405),
        ("unknown id", 404),
        ("without the CSRF token", 403),
    ],
)
def test_bad_suspension_requests_change_nothing(programme_manager, startup, hub_tasks, how, status):
    organisation = startup["organisation"]
    _key, service_key = make_key(organisation=organisation, acting_user=startup["owner"])
    api = key_client(service_key)
    browsers = [signed_in(startup["owner"]), signed_in(startup["member"])]
    manager = Client(enforce_csrf_checks=how == "without the CSRF token")
    manager.force_login(programme_manager)
    url = reverse("dashboard:organisation_suspend", args=[organisation.public_id])
    hub_tasks.clear()

    if how == "no reason":
        response = manager.post(url, {})
    elif how == "blank reason":
        response = manager.post(url, {"reason": "   "})
    elif how == "GET":
        response = manager.get(url, {"reason": "by GET"})
    elif how == "unknown id":
        url = reverse("dashboard:organisation_suspend", args=[uuid.uuid4()])
        response = manager.post(url, {"reason": "who?"})
    else:
        response = manager.post(url, {"reason": "forged"})

    assert response.status_code == status
    if status == 400:
        assert response.context["suspension_form"].errors["reason"]
    _nothing_changed(startup, api, browsers)
    assert hub_tasks == []


def test_a_programme_manager_cannot_suspend_their_own_organisation(pm_client, programme_manager):
    organisation = MembershipFactory(user=programme_manager, role=Role.MEMBER).organisation
    response = pm_client.post(
        reverse("dashboard:organisation_suspend", args=[organisation.public_id]),
        {"reason": "mine"},
    )
    assert response.status_code == 403
    assert "another programme manager" in response.content.decode()
    organisation.refresh_from_db()
    assert organisation.is_active
    assert not AuditEvent.objects.filter(action="organisation.suspended").exists()


def test_the_services_refuse_someone_who_is_not_a_programme_manager(startup):
    with pytest.raises(PermissionDenied):
        suspend(subject=startup["organisation"], reason="x", acting_user=startup["owner"])
    assert Organisation.objects.get(pk=startup["organisation"].pk).is_active


# --- What a suspended organisation can no longer do -----------------------------------------


def test_a_suspended_organisation_cannot_launch_restart_or_receive_credits(
    programme_manager, startup, hub_tasks
):
    organisation = startup["organisation"]
    stopped = Sandbox.objects.get(status=Status.STOPPED, organisation=organisation)
    suspend(subject=organisation, reason="x", acting_user=programme_manager)
    hub_tasks.clear()
    before = (Sandbox.objects.count(), LedgerEntry.objects.count(), CreditGrant.objects.count())

    with pytest.raises(PermissionDenied, match="suspended"):
        committed(
            launcher.sandbox_launch,
            user=startup["member"],
            image=image(),
            profile=profile("cpu-small"),
        )
    with pytest.raises(PermissionDenied, match="suspended"):
        committed(launcher.sandbox_restart, sandbox=stopped, acting_user=startup["member"])
    with pytest.raises(ApplicationError, match="suspended"):
        adjustment_post(
            account=startup["account"],
            credit_seconds=HOUR,
            reason="goodwill",
            idempotency_key="adjustment:suspended",
            acting_user=programme_manager,
        )

    after = (Sandbox.objects.count(), LedgerEntry.objects.count(), CreditGrant.objects.count())
    assert after == before
    assert Sandbox.objects.get(pk=stopped.pk).status == Status.STOPPED
    assert hub_tasks == []


def test_a_launch_that_read_the_organisation_before_its_suspension_is_refused(
    monkeypatch, programme_manager, startup, hub_tasks
):
    # given a launch that found the organisation active (before its transaction)...
    holder = launcher.holder_for(user=startup["member"])
    monkeypatch.setattr(launcher, "holder_for", lambda **kwargs: holder)
    # ...and a suspension that commits before the launch takes its lock
    suspend(subject=startup["organisation"], reason="x", acting_user=programme_manager)
    hub_tasks.clear()
    # then the launch reads the flag again under the lock, and is refused
    with pytest.raises(PermissionDenied, match="suspended"):
        committed(
            launcher.sandbox_launch,
            user=startup["member"],
            image=image(),
            profile=profile("cpu-small"),
        )
    assert not Sandbox.objects.filter(user=startup["member"]).live().exists()
    assert hub_tasks == []


def _race_once(manager) -> list[str]:
    """Three members launch while a programme manager suspends their organisation, all at once;
    returns the statuses of its sandboxes that are neither stopping nor stopped."""
    founders = [MembershipFactory(role=Role.OWNER)]
    organisation = founders[0].organisation
    founders += [MembershipFactory(organisation=organisation) for _ in range(2)]
    lot(account_for_organisation(organisation), 100 * HOUR)
    start = threading.Barrier(len(founders) + 1)
    errors = []

    def launch(person):
        try:
            start.wait()
            launcher.sandbox_launch(user=person, image=image(), profile=profile("cpu-small"))
        except PermissionDenied:
            pass  # refused: the suspension came first
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def suspension():
        try:
            start.wait()
            suspend(subject=organisation, reason="race", acting_user=manager)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch, args=(m.user,)) for m in founders]
    threads.append(threading.Thread(target=suspension))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert not Organisation.objects.get(pk=organisation.pk).is_active
    left = Sandbox.objects.filter(organisation=organisation).exclude(
        status__in=[Status.STOPPING, Status.STOPPED]
    )
    return list(left.values_list("status", flat=True))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_launches_racing_a_suspension_end_stopped_or_refused(hub_tasks):
    """Real threads on real PostgreSQL transactions: whoever wins, no sandbox of a suspended
    organisation is left running (the suspension locks its members' rows, a launch holds its
    person's row and reads the flag again under it)."""
    catalogue()
    manager = UserFactory()
    programme_manager_grant(user=manager, acting_user=None)
    for _round in range(4):
        assert _race_once(manager) == []


# --- The live streams notice ----------------------------------------------------------------


@pytest.fixture
def own_channel_prefix(settings):
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    layers["default"]["CONFIG"]["prefix"] = f"directory-test-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = layers


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_suspension_closes_the_members_open_live_streams(
    monkeypatch, own_channel_prefix, settings
):
    from sandboxes.live import broadcast

    monkeypatch.setattr(LiveConsumer, "ACCESS_RECHECK_SECONDS", 0)
    membership = await sync_to_async(MembershipFactory)(role=Role.OWNER)
    organisation = membership.organisation
    manager = await sync_to_async(UserFactory)()
    await sync_to_async(programme_manager_grant)(user=manager, acting_user=None)
    await sync_to_async(totp_activate)(manager)
    browser = await sync_to_async(signed_in)(membership.user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    cookie = cookie.encode()
    own = live_socket(cookie=cookie)
    shared = live_socket(f"/ws/live/organisation/{organisation.public_id}/", cookie=cookie)
    assert (await own.open())[0]
    assert (await shared.open())[0]

    await sync_to_async(suspend)(subject=organisation, reason="live", acting_user=manager)
    await sync_to_async(broadcast.send_after_commit)(
        [
            (user_group(membership.user.pk), {"type": "credits.balance"}),
            (organisation_group(organisation.pk), {"type": "credits.balance"}),
        ]
    )

    assert await own.receive_close() == 4401  # the session is gone
    assert await shared.receive_close() in (4401, 4403)  # signed out, and the stream is closed


def test_session_key_is_gone_from_the_database(programme_manager, startup):
    """The sessions are deleted, not only made useless."""
    from django.contrib.sessions.models import Session

    browser = signed_in(startup["member"])
    key = browser.session.session_key
    assert Session.objects.filter(session_key=key).exists()
    suspend(subject=startup["organisation"], reason="x", acting_user=programme_manager)
    assert not Session.objects.filter(session_key=key).exists()
