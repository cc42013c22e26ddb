"""The live streams' Origin check: a browser's socket must come from the portal's own origin
(scheme, host and port), plus one exception for API clients.

Browsers always send Origin on a WebSocket handshake, and it is the only thing that stops
another site's page from opening a socket with the visitor's session cookie. Comparing the host
alone is not enough: cookies ignore ports, so a page on the same host name but another port or
scheme (the hub's proxy, a notebook server) would pass a host check and ride the visitor's
session. So the Origin must equal the origin the handshake was made to: the scheme of the
connection (`ws` -> `http`, `wss` -> `https`, as the ASGI server reports it behind the TLS
proxy) and the `Host` header (itself one of ALLOWED_HOSTS), default ports normalised. A foreign,
malformed or missing Origin is refused before the handshake completes.

Scripts (websockets, httpx-ws) usually send no Origin at all; they authenticate with
`Authorization: Bearer <key>`, which a browser cannot set on a WebSocket, so a handshake with no
Origin is let through when it carries that header (the consumer then checks the key). A foreign
Origin is refused with or without a key.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}
HTTP_SCHEME_OF = {"ws": "http", "wss": "https"}


def _header(scope, name: bytes) -> bytes | None:
    for header, value in scope.get("headers", []):
        if header == name:
            return value
    return None


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None when it does not parse."""
    try:
        parsed = urlsplit(f"{scheme}://{netloc}")
        port = parsed.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not parsed.hostname or port is None or scheme not in DEFAULT_PORTS:
        return None
    return scheme, parsed.hostname.lower(), port


def same_origin(scope) -> bool:
    """The handshake's Origin is exactly the origin it was sent to, on an allowed host."""
    origin_raw, host_raw = _header(scope, b"origin"), _header(scope, b"host")
    if origin_raw is None or host_raw is None:
        return False
    try:
        origin, host = origin_raw.decode("ascii"), host_raw.decode("ascii")
    except UnicodeDecodeError:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    if parsed.path or parsed.query or parsed.fragment or parsed.username or parsed.password:
        return False
    expected = _origin_tuple(HTTP_SCHEME_OF.get(scope.get("scheme", "ws"), ""), host)
    presented = _origin_tuple(parsed.scheme, parsed.netloc)
    return expected is not None and presented == expected


class LiveOriginValidator:
    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        api_client = _header(scope, b"origin") is None and _header(scope, b"authorization")
        if api_client or same_origin(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
