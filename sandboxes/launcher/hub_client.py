"""The portal's one door to the JupyterHub REST API.

Synchronous (it runs in Celery tasks and management commands), with timeouts everywhere,
retries with back-off on 429, 5xx and connection errors, and typed results. The portal talks to
the hub as the service "portal", whose role holds only what this module uses.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: building it reads the CA bundle,
    tens of milliseconds that every launch task would otherwise spend before its first request."""
    return httpx.create_ssl_context()


class HubError(Exception):
    """The hub answered, but not as hoped."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class HubUnavailable(HubError):
    """The hub could not be reached, or kept failing after the retries."""


@dataclass(frozen=True)
class HubServer:
    name: str
    ready: bool
    pending: str | None  # "spawn", "stop" or None
    url: str
    started: str | None
    last_activity: str | None

    @classmethod
    def from_json(cls, data: dict) -> HubServer:
        return cls(
            name=data.get("name", ""),
            ready=bool(data.get("ready")),
            pending=data.get("pending"),
            url=data.get("url", ""),
            started=data.get("started"),
            last_activity=data.get("last_activity"),
        )


@dataclass(frozen=True)
class ProgressEvent:
    progress: int
    message: str
    ready: bool = False
    failed: bool = False
    url: str = ""


class HubClient:
    def __init__(
        self,
        *,
        api_url: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.api_url = (api_url or settings.HUB_API_URL).rstrip("/")
        self.retries = settings.HUB_CLIENT_RETRIES if retries is None else retries
        self.http = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"token {token or settings.HUB_API_TOKEN}"},
            timeout=settings.HUB_CLIENT_TIMEOUT if timeout is None else timeout,
            transport=transport,
            verify=_tls(),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, ok: tuple[int, ...], **kwargs) -> httpx.Response:
        delay = 0.5
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise HubUnavailable(f"JupyterHub is unreachable: {exc}") from exc
                logger.warning("hub %s %s: %s; retrying", method, path, exc)
            else:
                if response.status_code in ok:
                    return response
                if response.status_code not in RETRY_STATUSES or last:
                    raise HubError(_message(response), status=response.status_code)
                delay = max(delay, _retry_after(response))
                logger.warning("hub %s %s: %s; retrying", method, path, response.status_code)
            time.sleep(delay)
            delay = min(delay * 2, 8)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _server_path(user: str, server: str) -> str:
        return f"/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"

    # --- the calls the portal makes ---------------------------------------------------------

    def info(self) -> dict:
        return self._request("GET", "/", ok=(200,)).json()

    def user_ensure(self, user: str) -> None:
        """Create the hub user unless it exists (201 created, 409 already there)."""
        self._request("POST", f"/users/{quote(user, safe='')}", ok=(201, 409))

    def user_servers(self, user: str) -> dict[str, HubServer]:
        response = self._request("GET", f"/users/{quote(user, safe='')}", ok=(200, 404))
        if response.status_code == 404:
            return {}
        servers = response.json().get("servers") or {}
        return {name: HubServer.from_json(data) for name, data in servers.items()}

    def server_get(self, user: str, server: str) -> HubServer | None:
        response = self._request("GET", self._server_path(user, server), ok=(200, 404))
        return HubServer.from_json(response.json()) if response.status_code == 200 else None

    def server_start(self, user: str, server: str, *, display_name: str = "") -> bool:
        """Ask for the server to start. True when it is ready at once, False when pending.

        The hub user is created when the hub does not know them (404: a first launch, or a hub
        user deleted since), rather than asked for before every start, which would put one more
        round trip in front of each launch. No user_options are sent: the spawner takes its
        orders from the portal, not from here.
        """
        body = {"user_options": {}, "display_name": display_name or server}
        path = self._server_path(user, server)
        response = self._request("POST", path, ok=(201, 202, 404), json=body)
        if response.status_code == 404:
            self.user_ensure(user)
            response = self._request("POST", path, ok=(201, 202), json=body)
        return response.status_code == 201

    def server_progress(self, user: str, server: str, *, timeout: float) -> Iterator[ProgressEvent]:
        """The spawn's progress events (server-sent events) until ready or failed."""
        path = self._server_path(user, server) + "/progress"
        deadline = time.monotonic() + timeout
        stream_timeout = httpx.Timeout(self.http.timeout.connect, read=20.0)
        with self.http.stream("GET", path, timeout=stream_timeout) as response:
            if response.status_code != 200:
                response.read()
                raise HubError(_message(response), status=response.status_code)
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    raise HubError("the server did not become ready in time")
                if not line.startswith("data:"):
                    continue
                data = json.loads(line[5:])
                event = ProgressEvent(
                    progress=int(data.get("progress") or 0),
                    message=str(data.get("message") or ""),
                    ready=bool(data.get("ready")),
                    failed=bool(data.get("failed")),
                    url=str(data.get("url") or ""),
                )
                yield event
                if event.ready or event.failed:
                    return

    def server_stop(self, user: str, server: str, *, remove: bool = True) -> bool:
        """Stop (and forget) a named server. True when it is gone already, False when pending.
        A server the hub does not know is already stopped."""
        response = self._request(
            "DELETE", self._server_path(user, server), ok=(202, 204, 404), json={"remove": remove}
        )
        return response.status_code in (204, 404)

    def servers_running(self) -> dict[tuple[str, str], HubServer]:
        """Every server the hub has (any state), keyed by (user, server name)."""
        found: dict[tuple[str, str], HubServer] = {}
        offset = 0
        while True:
            response = self._request(
                "GET",
                "/users",
                ok=(200,),
                params={"state": "active", "offset": offset, "limit": 200},
                headers={"Accept": "application/jupyterhub-pagination+json"},
            )
            page = response.json()
            for user in page["items"]:
                for name, server in (user.get("servers") or {}).items():
                    found[(user["name"], name)] = HubServer.from_json(server)
            next_page = (page.get("_pagination") or {}).get("next")
            if not next_page:
                return found
            offset = next_page["offset"]

    def token_create(self, user: str, *, scopes: list[str], expires_in: int, note: str) -> str:
        """A token for `user` that holds only `scopes` and expires."""
        response = self._request(
            "POST",
            f"/users/{quote(user, safe='')}/tokens",
            ok=(200, 201),
            json={"scopes": scopes, "expires_in": expires_in, "note": note},
        )
        return response.json()["token"]

    # --- a person's hub session ------------------------------------------------------------
    #
    # JupyterHub 6 keeps no session table: its login cookie holds the user's `cookie_id`, which
    # no API rotates. Deleting the hub user takes that id with it (a user made again gets a new
    # one), so the cookie then finds nobody and the hub sends the browser to log in. Tokens are
    # separate: OAuth tokens of the person's notebook sessions, access tokens the portal minted.

    def user_tokens(self, user: str) -> list[dict]:
        """The user's unexpired hub tokens (the hub's token models); none for an unknown user."""
        response = self._request("GET", f"/users/{quote(user, safe='')}/tokens", ok=(200, 404))
        if response.status_code == 404:
            return []
        return response.json().get("api_tokens") or []

    def token_delete(self, user: str, token_id: str) -> None:
        """Delete one token (for an OAuth token: every token of that OAuth client, as the hub
        does). A token already gone is deleted."""
        path = f"/users/{quote(user, safe='')}/tokens/{quote(token_id, safe='')}"
        self._request("DELETE", path, ok=(204, 404))

    def user_tokens_revoke(self, user: str) -> int:
        """Delete every token the person holds, except a running server's own credential (its
        note is "Server at ...": the server needs it to check its visitors, and it dies with
        the server). Returns how many were deleted."""
        deleted = 0
        for token in self.user_tokens(user):
            if (token.get("note") or "").startswith("Server at "):
                continue
            self.token_delete(user, token["id"])
            deleted += 1
        return deleted

    def user_delete(self, user: str) -> bool:
        """Delete the hub user, which ends their hub login everywhere (see above). True when it
        was deleted now, False when it did not exist. The hub refuses (400) while a server of
        theirs is stopping; the caller makes sure none runs."""
        response = self._request("DELETE", f"/users/{quote(user, safe='')}", ok=(200, 204, 404))
        return response.status_code != 404


def _message(response: httpx.Response) -> str:
    try:
        return f"{response.status_code}: {response.json().get('message', response.text[:200])}"
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("Retry-After", 0)), 30.0)
    except ValueError:
        return 0.0


def hub_client() -> HubClient:
    return HubClient()
