"""The live sandbox WebSocket: sessions only, allowed origins only, each person their own."""

import json

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.conf import settings

from portal.asgi import application
from sandboxes.launcher.broadcast import user_group
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def session_cookie(user) -> bytes:
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


class WebsocketCommunicator(ApplicationCommunicator):
    """A WebSocket client for an ASGI app (channels.testing would import daphne, which the
    portal does not use)."""

    def __init__(self, app, path, headers):
        super().__init__(
            app, {"type": "websocket", "path": path, "headers": headers, "subprotocols": []}
        )

    async def connect(self, timeout=5):
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        return True, response.get("subprotocol")

    async def receive_json_from(self, timeout=5):
        return json.loads((await self.receive_output(timeout))["text"])

    async def send_to(self, text_data):
        await self.send_input({"type": "websocket.receive", "text": text_data})

    async def disconnect(self, code=1000):
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(1)


def communicator(cookie: bytes | None = None, origin: bytes = b"http://127.0.0.1"):
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/sandboxes/", headers=headers)


async def test_without_a_session_the_socket_is_refused():
    ws = communicator()
    connected, code = await ws.connect()
    assert not connected
    assert code == 4401


async def test_a_foreign_origin_is_refused():
    user = await sync_to_async(UserFactory)()
    ws = communicator(await session_cookie(user), origin=b"https://evil.example")
    connected, _code = await ws.connect()
    assert not connected


async def test_each_person_receives_only_their_own_messages_and_cannot_send():
    alice, bob = await sync_to_async(UserFactory)(), await sync_to_async(UserFactory)()
    ws_alice = communicator(await session_cookie(alice))
    ws_bob = communicator(await session_cookie(bob))
    assert (await ws_alice.connect())[0]
    assert (await ws_bob.connect())[0]
    layer = get_channel_layer()
    message = {"type": "sandbox.status", "v": 1, "sandbox": "x", "status": "running"}
    await layer.group_send(user_group(alice.pk), {"type": "portal.message", "message": message})
    assert await ws_alice.receive_json_from(timeout=5) == message
    assert await ws_bob.receive_nothing(timeout=0.5)
    await ws_bob.send_to(text_data="not json at all")
    assert (await ws_bob.receive_json_from(timeout=5))["type"] == "error"
    await ws_alice.disconnect()
    await ws_bob.disconnect()
