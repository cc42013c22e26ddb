"""The live streams' Origin check: channels' AllowedHostsOriginValidator for browsers, plus one
exception for API clients.

Browsers always send Origin on a WebSocket handshake, and it is the only thing that stops
another site's page from opening a socket with the visitor's session cookie: a foreign or
missing Origin is refused as channels refuses it. Scripts (websockets, httpx-ws) usually send
no Origin at all; they authenticate with `Authorization: Bearer <key>`, which a browser cannot
set on a WebSocket, so a handshake with no Origin is let through when it carries that header
(the consumer then checks the key). A foreign Origin is refused with or without a key.
"""

from channels.security.websocket import AllowedHostsOriginValidator


def _has_header(scope, name: bytes) -> bool:
    return any(header == name for header, _value in scope.get("headers", []))


class LiveOriginValidator:
    def __init__(self, application):
        self.application = application
        self.browser_validator = AllowedHostsOriginValidator(application)

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] == "websocket"
            and not _has_header(scope, b"origin")
            and _has_header(scope, b"authorization")
        ):
            return await self.application(scope, receive, send)
        return await self.browser_validator(scope, receive, send)
