"""The cluster stream carries a programme manager's authority: a session must have passed MFA,
having TOTP on the account is not enough. Through the full ASGI stack, as the other live tests."""

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from portal.users.services import programme_manager_grant
from tests.conftest import sign_in_with_password_only, totp_activate
from tests.factories import UserFactory

from .conftest import live_socket, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
CLUSTER = "/ws/live/cluster/"


@sync_to_async
def make_programme_manager_with_totp():
    manager = UserFactory()
    programme_manager_grant(user=manager, acting_user=None)
    totp_activate(manager)
    return manager


@sync_to_async
def password_only_cookie(user) -> bytes:
    """The cookie of a session that signed in without the second factor."""
    client = Client()
    sign_in_with_password_only(client, user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def test_a_session_without_the_second_factor_cannot_watch_the_cluster():
    # given a programme manager who has TOTP, in a session signed in with the password alone
    manager = await make_programme_manager_with_totp()
    ws = live_socket(CLUSTER, cookie=await password_only_cookie(manager))

    # when it opens the cluster stream, then it is refused as "not yours"
    assert await ws.open() == (False, 4403)


async def test_the_same_manager_in_a_session_that_passed_it_watches_the_cluster():
    manager = await make_programme_manager_with_totp()
    ws = live_socket(CLUSTER, cookie=await session_cookie(manager))
    assert (await ws.open())[0]
    await ws.close()
