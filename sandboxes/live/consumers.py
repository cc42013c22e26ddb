"""The one live consumer: a person's own stream, an organisation's, or the cluster's.

It only sends. It checks who is asking (session or API key, see access.py), joins one group
and forwards what the broadcast module sends there. It never writes to the database.

A refusal accepts the handshake and closes at once with its code: a close before the accept
becomes a bare HTTP 403 at the ASGI server (the ASGI spec), and the client could not tell
"sign in again" (4401) from "not yours" (4403). A refused socket joins nothing.

Limits per connection (constants below, documented in MESSAGES.md):
- inbound: a frame over 4096 bytes closes with 1009; an 11th frame within one second closes
  with 4429; any other frame is answered with one error message and changes nothing.
- outbound: a burst of 200 messages, then 100 a second on average (a token bucket). Beyond
  that messages are dropped, and the next one that goes out is preceded by a `live.dropped`
  message with the count, so a client knows to read the current state again; nothing is
  dropped silently. (The channel layer is Redis Pub/Sub: the server process queues what it
  receives for its sockets; see MESSAGES.md for why not the list-based layer.)
- access is checked again every 60 seconds while messages flow: a revoked key, a removed
  member or a deactivated person stops receiving (closed with 4401 or 4403).
"""

from __future__ import annotations

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils import translation

from .access import StreamRefused, live_stream_group
from .broadcast import VERSION, localized
from .limits import SlidingWindow, TokenBucket

MESSAGE_TOO_BIG = 1009
TOO_MANY_FRAMES = 4429


def _session_user_now(scope):
    """The session's person as the database has them now (None once signed out elsewhere,
    deactivated or gone)."""
    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    session = scope.get("session")
    if session is not None and session.session_key and not session.exists(session.session_key):
        return None
    return get_user_model().objects.filter(pk=user.pk, is_active=True).first()


def _connection_language(scope) -> str:
    """The language the socket's reader gets messages in, found as Django's LocaleMiddleware
    finds a page's (and an API response's): the language cookie that the portal's language
    switch sets, else the Accept-Language header, else the portal's default."""
    request = HttpRequest()
    request.COOKIES = scope.get("cookies") or {}
    for name, value in scope.get("headers", []):
        if name == b"accept-language":
            request.META["HTTP_ACCEPT_LANGUAGE"] = value.decode("latin-1")
    return translation.get_language_from_request(request)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    MAX_FRAME_BYTES = 4096
    INBOUND_FRAMES = 10
    INBOUND_SECONDS = 1.0
    OUTBOUND_BURST = 200
    OUTBOUND_PER_SECOND = 100
    ACCESS_RECHECK_SECONDS = 60

    async def connect(self):
        self.group = None
        self.closed = False
        self.language = _connection_language(self.scope)
        self.dropped = 0
        self.inbound = SlidingWindow(limit=self.INBOUND_FRAMES, seconds=self.INBOUND_SECONDS)
        self.outbound = TokenBucket(
            capacity=self.OUTBOUND_BURST, per_second=self.OUTBOUND_PER_SECOND
        )
        try:
            group = await self._check_access(session_user=self.scope.get("user"))
        except StreamRefused as refusal:
            await self.accept()
            await self._end(refusal.code)
            return
        # Joined before the accept: once a client sees the socket open, it receives.
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def _check_access(self, *, session_user) -> str:
        kwargs = self.scope["url_route"]["kwargs"]
        headers = self.scope.get("headers", [])
        client = self.scope.get("client") or [None]
        group = await database_sync_to_async(live_stream_group)(
            session_user=session_user,
            authorization=[value for name, value in headers if name == b"authorization"],
            ip=client[0],
            stream=kwargs["stream"],
            organisation_public_id=kwargs.get("public_id"),
            session=self.scope.get("session"),  # the cluster stream needs one that passed MFA
        )
        self.access_checked_at = time.monotonic()
        return group

    async def _still_allowed(self) -> bool:
        session_user = await database_sync_to_async(_session_user_now)(self.scope)
        try:
            await self._check_access(session_user=session_user)
        except StreamRefused as refusal:
            await self._end(refusal.code)
            return False
        return True

    async def _end(self, code: int) -> None:
        self.closed = True
        await self._leave()
        await self.close(code=code)

    async def _leave(self) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def disconnect(self, code):
        self.closed = True
        await self._leave()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Nothing the client says is acted on; only the limits apply.
        if self.closed:
            return
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > self.MAX_FRAME_BYTES:
            await self._end(MESSAGE_TOO_BIG)
            return
        if not self.inbound.allow():
            await self._end(TOO_MANY_FRAMES)
            return
        await self.send_json({"type": "error", "v": VERSION, "message": "This channel only sends."})

    async def portal_message(self, event):
        """A message from the broadcast module, forwarded as it is (its words in the
        connection's language, when it carries them in several)."""
        if self.closed:
            return
        if (
            time.monotonic() - self.access_checked_at >= self.ACCESS_RECHECK_SECONDS
            and not await self._still_allowed()
        ):
            return
        if not self.outbound.take():
            self.dropped += 1
            return
        if self.dropped:
            await self.send_json({"type": "live.dropped", "v": VERSION, "dropped": self.dropped})
            self.dropped = 0
        await self.send_json(localized(event["message"], self.language))
