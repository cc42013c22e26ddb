"""The live stream's Origin check plays the attacker: a page on the portal's host name but another
port (the hub's proxy, a notebook server) or scheme must not open a socket with the visitor's
session cookie; cookies ignore ports, so only the Origin tells them apart."""

import pytest

from sandboxes.live.origins import same_origin
from tests.factories import UserFactory

from .conftest import LiveSocket, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def scope(origin: bytes | None, host: bytes = b"portal.localhost:8000", scheme: str = "ws"):
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.fixture(autouse=True)
def _allowed_hosts(settings):
    settings.ALLOWED_HOSTS = ["portal.localhost", "127.0.0.1"]


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        (b"http://portal.localhost:8000", b"portal.localhost:8000", "ws"),
        (b"https://portal.localhost", b"portal.localhost", "wss"),
        (b"https://portal.localhost:443", b"portal.localhost", "wss"),
        (b"http://PORTAL.localhost:8000", b"portal.localhost:8000", "ws"),
    ],
)
async def test_the_portals_own_origin_passes(origin, host, scheme):
    assert same_origin(scope(origin, host, scheme))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        # the hub's proxy on the same host name, another port: passed a host-only check
        (b"http://portal.localhost:8001", b"portal.localhost:8000", "ws"),
        (b"http://127.0.0.1:8001", b"127.0.0.1:8000", "ws"),
        # the same host and port over plain HTTP while the socket is TLS (a downgrade)
        (b"http://portal.localhost", b"portal.localhost", "wss"),
        (b"https://portal.localhost:8000", b"portal.localhost:8000", "ws"),
        # a user's notebook server on a subdomain
        (b"http://evil.hub.localhost:8000", b"portal.localhost:8000", "ws"),
        # a host the portal does not serve, even when Origin and Host agree
        (b"http://evil.example", b"evil.example", "ws"),
        # malformed
        (b"null", b"portal.localhost:8000", "ws"),
        (b"http://portal.localhost:8000/path", b"portal.localhost:8000", "ws"),
        (b"http://user@portal.localhost:8000", b"portal.localhost:8000", "ws"),
        (b"http://portal.localhost:99999", b"portal.localhost:8000", "ws"),
        (b"javascript://portal.localhost:8000", b"portal.localhost:8000", "ws"),
        ("http://pörtal.localhost:8000".encode(), b"portal.localhost:8000", "ws"),
        (b"", b"portal.localhost:8000", "ws"),
    ],
)
async def test_another_origin_is_refused(origin, host, scheme):
    assert not same_origin(scope(origin, host, scheme))


async def test_a_session_socket_from_the_hubs_port_is_refused_before_the_handshake():
    # given a signed-in visitor whose browser sends the portal cookie to any port of the host
    user = await _user()
    cookie = await session_cookie(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"cookie", cookie)]
    # when a page served by the hub's proxy (port 8001) opens the live stream
    hostile = LiveSocket("/ws/live/", [*headers, (b"origin", b"http://127.0.0.1:8001")])
    # then it is refused before the handshake completes; the portal's own page is accepted
    assert await hostile.open() == (False, None)
    own = LiveSocket("/ws/live/", [*headers, (b"origin", b"http://127.0.0.1:8000")])
    assert await own.open() == (True, None)
    await own.close()


async def _user():
    from asgiref.sync import sync_to_async

    return await sync_to_async(UserFactory)()
