"""Sockets for the live-stream tests: the full ASGI stack (portal.asgi.application) on the real
Redis channel layer, with a channel prefix of each test's own."""

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings

from portal.asgi import application

ORIGIN = b"http://127.0.0.1"


@pytest.fixture(autouse=True)
def _own_channel_prefix(settings):
    """Every test gets channel-layer keys of its own in the shared test Redis: another test run
    on this machine broadcasting to live.user.1 of its database never reaches these sockets."""
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    layers["default"]["CONFIG"]["prefix"] = f"live-test-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = layers  # channels drops its cached layers on setting_changed


class LiveSocket(ApplicationCommunicator):
    """A WebSocket client for the ASGI application (channels.testing would import daphne, which
    the portal does not use)."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]]):
        super().__init__(
            application,
            {
                "type": "websocket",
                "path": path,
                "headers": headers,
                "subprotocols": [],
                "client": ["127.0.0.1", 50000],
            },
        )

    async def open(self, timeout: float = 5) -> tuple[bool, int | None]:
        """(True, None) when the stream is open; (False, close code) when it is refused. A
        refusal by the consumer accepts and closes at once (so the client sees the code); the
        Origin check refuses before the handshake completes."""
        await self.send_input({"type": "websocket.connect"})
        first = await self.receive_output(timeout)
        if first["type"] == "websocket.close":
            return False, first.get("code")
        assert first["type"] == "websocket.accept"
        if not await self.receive_nothing(timeout=0.05):
            closing = await self.receive_output(timeout)
            assert closing["type"] == "websocket.close"
            return False, closing.get("code")
        return True, None

    async def receive_json(self, timeout: float = 5) -> dict:
        output = await self.receive_output(timeout)
        assert output["type"] == "websocket.send", output
        return json.loads(output["text"])

    async def receive_close(self, timeout: float = 5) -> int | None:
        output = await self.receive_output(timeout)
        assert output["type"] == "websocket.close", output
        return output.get("code")

    async def send_text(self, text: str) -> None:
        await self.send_input({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self.send_input({"type": "websocket.receive", "bytes": data})

    async def close(self) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.wait(1)


def live_socket(
    path: str = "/ws/live/",
    *,
    cookie: bytes | None = None,
    key: str | None = None,
    origin: bytes | None = ORIGIN,
) -> LiveSocket:
    headers = [(b"host", b"127.0.0.1")]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie:
        headers.append((b"cookie", cookie))
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return LiveSocket(path, headers)


async def session_cookie(user) -> bytes:
    """The cookie of a signed-in browser session for `user`."""
    from django.test import Client

    client = Client()
    await sync_to_async(client.force_login)(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()
