"""The live WebSocket streams, through the full ASGI stack and the real Redis channel layer:
who may open which stream, who receives what, and what the socket does with what it is sent."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from portal.apikeys.models import ApiKey
from portal.apikeys.services import apikey_create
from portal.audit.models import AuditEvent
from portal.organisations.models import Role
from portal.users.services import programme_manager_grant
from sandboxes.live import broadcast
from sandboxes.live.broadcast import CLUSTER_GROUP, organisation_group, user_group
from sandboxes.live.consumers import LiveConsumer
from tests.conftest import totp_activate
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

from .conftest import live_socket, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

send_after_commit = sync_to_async(broadcast.send_after_commit)


def sample(user, sandbox="5f0c0d8e-0000-4000-8000-000000000001") -> dict:
    return {
        "type": "usage.sample",
        "sandbox": sandbox,
        "user": user.name,
        "at": "2025-01-01T00:00:00Z",
        "simulated": True,
        "gpu_util_pct": 42.0,
        "charged_credit_seconds": 10,
        "gpus": [],
    }


@sync_to_async
def make_user(**kwargs):
    return UserFactory(**kwargs)


@sync_to_async
def make_member(organisation=None, role=Role.MEMBER):
    return MembershipFactory(organisation=organisation or OrganisationFactory(), role=role)


@sync_to_async
def make_programme_manager(*, mfa: bool):
    manager = UserFactory()
    programme_manager_grant(user=manager, acting_user=None)
    if mfa:
        totp_activate(manager)
    return manager


@sync_to_async
def make_key(*, scopes, user=None, organisation=None, acting_user=None) -> str:
    _key, full_key = apikey_create(
        name="live",
        scopes=scopes,
        acting_user=acting_user or user,
        user=user,
        organisation=organisation,
    )
    return full_key


@sync_to_async
def database_rows() -> tuple:
    """What a consumer could have written: audit events, key use, sessions."""
    from django.contrib.sessions.models import Session

    return (
        AuditEvent.objects.count(),
        sorted(ApiKey.objects.values_list("pk", "last_used_at", "last_used_ip")),
        sorted(Session.objects.values_list("session_key", "expire_date")),
    )


# --- authentication and Origin ---------------------------------------------------------------


async def test_without_a_session_the_socket_is_refused_with_4401():
    assert await live_socket().open() == (False, 4401)


async def test_the_sandbox_pages_old_address_is_the_same_stream():
    user = await make_user()
    ws = live_socket("/ws/sandboxes/", cookie=await session_cookie(user))
    assert (await ws.open())[0]
    await send_after_commit([(user_group(user.pk), sample(user))])
    assert (await ws.receive_json())["type"] == "usage.sample"
    await ws.close()


async def test_a_foreign_origin_is_refused_even_with_a_valid_key():
    user = await make_user()
    key = await make_key(user=user, scopes=["usage:read"])
    for headers in ({"cookie": await session_cookie(user)}, {"key": key}):
        ws = live_socket(origin=b"https://evil.example", **headers)
        assert await ws.open() == (False, None)  # refused before the handshake completes


async def test_a_missing_origin_is_refused_without_a_key():
    user = await make_user()
    ws = live_socket(cookie=await session_cookie(user), origin=None)
    assert await ws.open() == (False, None)


# --- a person's own stream ---------------------------------------------------------------------


async def test_twenty_people_each_receive_exactly_their_own_messages(monkeypatch):
    people = [await make_user() for _ in range(20)]
    sockets = [live_socket(cookie=await session_cookie(person)) for person in people]
    for ws in sockets:
        assert (await ws.open())[0]
    calls = []
    real = broadcast.async_to_sync
    monkeypatch.setattr(broadcast, "async_to_sync", lambda f: calls.append(f) or real(f))

    queued = await send_after_commit(
        (user_group(person.pk), sample(person, sandbox=f"sandbox-of-{person.pk}"))
        for person in people
    )

    assert queued == 20
    assert len(calls) == 1  # one event loop, one Redis connection, for the whole batch
    for person, ws in zip(people, sockets, strict=True):
        message = await ws.receive_json()
        assert message["sandbox"] == f"sandbox-of-{person.pk}"
        assert message["user"] == person.name
        assert (message["type"], message["v"]) == ("usage.sample", 1)
    quiet = await asyncio.gather(*(ws.receive_nothing(timeout=0.5) for ws in sockets))
    assert all(quiet)
    for ws in sockets:
        await ws.close()


async def test_sandbox_events_reach_the_owner_and_the_paying_organisation():
    from sandboxes.launcher.messages import sandbox_status_send
    from sandboxes.launcher.models import Sandbox

    owner = (await make_member(role=Role.OWNER)).user
    organisation = await sync_to_async(lambda: owner.memberships.get().organisation)()
    colleague = (await make_member(organisation)).user
    stranger = await make_user()
    own = live_socket(cookie=await session_cookie(owner))
    theirs = live_socket(
        f"/ws/live/organisation/{organisation.public_id}/",
        cookie=await session_cookie(colleague),
    )
    strangers = live_socket(cookie=await session_cookie(stranger))
    for ws in (own, theirs, strangers):
        assert (await ws.open())[0]
    sandbox = Sandbox(
        user=owner, organisation=organisation, status=Sandbox.Status.RUNNING, progress=100
    )

    assert await sync_to_async(sandbox_status_send)(sandbox) == 2

    expected = {
        "type": "sandbox.status",
        "v": 1,
        "sandbox": str(sandbox.public_id),
        "status": "running",
        "status_label": "Running",
        "message": "",
        "progress": 100,
        "queue_position": None,
    }
    assert await own.receive_json() == expected
    assert await theirs.receive_json() == expected
    assert await strangers.receive_nothing(timeout=0.3)
    for ws in (own, theirs, strangers):
        await ws.close()


async def test_each_socket_reads_a_sandboxs_status_in_its_own_language():
    from django.conf import settings
    from django.utils import translation

    from sandboxes.launcher.messages import sandbox_status_send
    from sandboxes.launcher.models import Sandbox

    owner = (await make_member(role=Role.OWNER)).user
    organisation = await sync_to_async(lambda: owner.memberships.get().organisation)()
    colleague = (await make_member(organisation)).user
    urdu = f"; {settings.LANGUAGE_COOKIE_NAME}=ur".encode()
    own = live_socket(cookie=await session_cookie(owner) + urdu)
    theirs = live_socket(
        f"/ws/live/organisation/{organisation.public_id}/",
        cookie=await session_cookie(colleague),
    )
    for ws in (own, theirs):
        assert (await ws.open())[0]
    # stopped by a Celery task, which speaks English
    sandbox = Sandbox(
        user=owner,
        organisation=organisation,
        status=Sandbox.Status.STOPPED,
        status_code="stopped",
        status_message="Stopped.",
    )

    def send_in_english():
        with translation.override("en"):
            return sandbox_status_send(sandbox)

    assert await sync_to_async(send_in_english)() == 2

    owners = await own.receive_json()
    colleagues = await theirs.receive_json()
    assert (owners["status_label"], owners["message"]) == ("رکا ہوا", "رک گیا۔")
    assert (colleagues["status_label"], colleagues["message"]) == ("Stopped", "Stopped.")
    assert broadcast.IN_EACH_LANGUAGE not in owners
    assert broadcast.IN_EACH_LANGUAGE not in colleagues
    for ws in (own, theirs):
        await ws.close()


# --- an organisation's stream ------------------------------------------------------------------


async def test_a_member_receives_the_organisations_messages_and_a_non_member_is_refused():
    membership = await make_member()
    organisation = membership.organisation
    outsider = await make_user()
    path = f"/ws/live/organisation/{organisation.public_id}/"
    member_ws = live_socket(path, cookie=await session_cookie(membership.user))
    assert (await member_ws.open())[0]

    assert await live_socket(path, cookie=await session_cookie(outsider)).open() == (False, 4403)
    unknown = "/ws/live/organisation/00000000-0000-4000-8000-000000000000/"
    assert await live_socket(unknown, cookie=await session_cookie(outsider)).open() == (
        False,
        4403,
    )

    balance = {
        "type": "credits.balance",
        "account": "acc",
        "balance_credit_seconds": 3600,
        "balance_gpu_hours": "1.00",
        "burn_credit_seconds_per_hour": 3600,
        "runway_seconds": 3600,
        "at": "2025-01-01T00:00:00Z",
    }
    await send_after_commit([(organisation_group(organisation.pk), balance)])
    assert await member_ws.receive_json() == {**balance, "v": 1}
    await member_ws.close()


# --- the cluster stream ------------------------------------------------------------------------


async def test_a_programme_manager_with_mfa_receives_the_cluster_view():
    manager = await make_programme_manager(mfa=True)
    ws = live_socket("/ws/live/cluster/", cookie=await session_cookie(manager))
    assert (await ws.open())[0]
    gpus = {"type": "cluster.gpus", "at": "2025-01-01T00:00:00Z", "gpus": [{"uuid": "GPU-1"}]}
    await send_after_commit([(CLUSTER_GROUP, gpus)])
    assert await ws.receive_json() == {**gpus, "v": 1}
    await ws.close()


@pytest.mark.parametrize("who", ["programme manager without MFA", "student", "org owner"])
async def test_only_programme_managers_with_mfa_open_the_cluster_stream(who):
    if who == "programme manager without MFA":
        person = await make_programme_manager(mfa=False)
    elif who == "org owner":
        person = (await make_member(role=Role.OWNER)).user
    else:
        person = await make_user()
    ws = live_socket("/ws/live/cluster/", cookie=await session_cookie(person))
    assert await ws.open() == (False, 4403)


# --- API keys ----------------------------------------------------------------------------------


async def test_a_usage_read_key_without_origin_receives_its_owners_messages():
    user = await make_user()
    key = await make_key(user=user, scopes=["usage:read"])
    ws = live_socket(key=key, origin=None)
    assert (await ws.open())[0]
    await send_after_commit([(user_group(user.pk), sample(user))])
    assert (await ws.receive_json())["user"] == user.name
    await ws.close()


async def test_a_key_without_usage_read_is_refused_4403():
    user = await make_user()
    key = await make_key(user=user, scopes=["sandboxes:read"])
    assert await live_socket(key=key, origin=None).open() == (False, 4403)


async def test_a_revoked_or_malformed_key_is_refused_4401():
    user = await make_user()
    key = await make_key(user=user, scopes=["usage:read"])
    await sync_to_async(ApiKey.objects.update)(revoked_at=timezone.now())
    assert await live_socket(key=key, origin=None).open() == (False, 4401)
    assert await live_socket(key="not-a-key", origin=None).open() == (False, 4401)


async def test_an_organisations_service_key_opens_only_that_organisations_stream():
    owner_membership = await make_member(role=Role.OWNER)
    organisation = owner_membership.organisation
    other = (await make_member()).organisation
    key = await make_key(
        organisation=organisation, acting_user=owner_membership.user, scopes=["usage:read"]
    )
    ws = live_socket(f"/ws/live/organisation/{organisation.public_id}/", key=key, origin=None)
    assert (await ws.open())[0]
    await send_after_commit([(organisation_group(organisation.pk), {"type": "credits.warning"})])
    assert (await ws.receive_json())["type"] == "credits.warning"
    await ws.close()

    assert await live_socket(key=key, origin=None).open() == (False, 4403)
    elsewhere = f"/ws/live/organisation/{other.public_id}/"
    assert await live_socket(elsewhere, key=key, origin=None).open() == (False, 4403)
    assert await live_socket("/ws/live/cluster/", key=key, origin=None).open() == (False, 4403)


async def test_a_programme_managers_key_needs_programme_read_for_the_cluster():
    manager = await make_programme_manager(mfa=False)
    with_programme = await make_key(user=manager, scopes=["usage:read", "programme:read"])
    usage_only = await make_key(user=manager, scopes=["usage:read"])
    ws = live_socket("/ws/live/cluster/", key=with_programme, origin=None)
    assert (await ws.open())[0]
    await ws.close()
    assert await live_socket("/ws/live/cluster/", key=usage_only, origin=None).open() == (
        False,
        4403,
    )


async def test_a_key_revoked_while_connected_ends_the_stream(monkeypatch):
    monkeypatch.setattr(LiveConsumer, "ACCESS_RECHECK_SECONDS", 0)
    user = await make_user()
    key = await make_key(user=user, scopes=["usage:read"])
    ws = live_socket(key=key, origin=None)
    assert (await ws.open())[0]
    await sync_to_async(ApiKey.objects.update)(revoked_at=timezone.now())

    await send_after_commit([(user_group(user.pk), sample(user))])

    assert await ws.receive_close() == 4401  # closed, and the sample never went out


# --- what the client sends ---------------------------------------------------------------------


async def test_a_frame_gets_one_error_reply_and_changes_nothing():
    user = await make_user()
    key = await make_key(user=user, scopes=["usage:read"])
    ws = live_socket(cookie=await session_cookie(user))
    api = live_socket(key=key, origin=None)
    before = await database_rows()
    assert (await ws.open())[0]
    assert (await api.open())[0]

    await ws.send_text('{"type": "usage.sample", "gpu_util_pct": 100}')
    await api.send_bytes(b"\x00\x01")

    for socket in (ws, api):
        assert await socket.receive_json() == {
            "type": "error",
            "v": 1,
            "message": "This channel only sends.",
        }
        assert await socket.receive_nothing(timeout=0.2)
        await socket.close()
    assert await database_rows() == before


async def test_an_oversized_frame_closes_with_1009():
    user = await make_user()
    ws = live_socket(cookie=await session_cookie(user))
    assert (await ws.open())[0]
    await ws.send_text("x" * 4096)  # at the limit: answered
    assert (await ws.receive_json())["type"] == "error"
    await ws.send_text("é" * 2049)  # 4098 bytes in UTF-8
    assert await ws.receive_close() == 1009


async def test_a_flood_closes_with_4429_and_nothing_is_written():
    user = await make_user()
    key = await make_key(user=user, scopes=["usage:read"])
    before = await database_rows()
    ws = live_socket(key=key, origin=None)
    assert (await ws.open())[0]
    for _ in range(11):
        await ws.send_text("{}")
    for _ in range(10):
        assert (await ws.receive_json())["type"] == "error"
    assert await ws.receive_close() == 4429
    # Gone from its group: a message to it now is not sent to a closed socket.
    await send_after_commit([(user_group(user.pk), sample(user))])
    assert await ws.receive_nothing(timeout=0.3)
    assert await database_rows() == before


async def test_over_the_outbound_rate_messages_are_dropped_and_the_drop_is_told(monkeypatch):
    monkeypatch.setattr(LiveConsumer, "OUTBOUND_BURST", 3)
    monkeypatch.setattr(LiveConsumer, "OUTBOUND_PER_SECOND", 5)
    user = await make_user()
    ws = live_socket(cookie=await session_cookie(user))
    assert (await ws.open())[0]

    await send_after_commit(
        (user_group(user.pk), {"type": "spawn.progress", "progress": n}) for n in range(5)
    )
    assert [(await ws.receive_json())["progress"] for _ in range(3)] == [0, 1, 2]
    assert await ws.receive_nothing(timeout=0.1)
    await asyncio.sleep(0.3)  # one message's worth of budget comes back
    await send_after_commit([(user_group(user.pk), {"type": "spawn.progress", "progress": 9})])

    assert await ws.receive_json() == {"type": "live.dropped", "v": 1, "dropped": 2}
    assert (await ws.receive_json())["progress"] == 9
    await ws.close()


@pytest.mark.parametrize(
    ("change", "code"),
    [("removed from the organisation", 4403), ("signed out elsewhere", 4401)],
)
async def test_a_member_who_loses_access_stops_receiving(monkeypatch, change, code):
    from django.contrib.sessions.models import Session

    monkeypatch.setattr(LiveConsumer, "ACCESS_RECHECK_SECONDS", 0)
    membership = await make_member()
    organisation = membership.organisation
    ws = live_socket(
        f"/ws/live/organisation/{organisation.public_id}/",
        cookie=await session_cookie(membership.user),
    )
    assert (await ws.open())[0]
    if change == "signed out elsewhere":
        await sync_to_async(Session.objects.all().delete)()
    else:
        await sync_to_async(membership.delete)()

    await send_after_commit([(organisation_group(organisation.pk), {"type": "credits.balance"})])

    assert await ws.receive_close() == code
