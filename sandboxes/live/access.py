"""Who may open which live stream. Reads only: the consumer calls these through
`database_sync_to_async`, at connect and again from time to time while the socket is open.

A stream is refused with a WebSocket close code the client can act on:
4401 (not signed in, or a malformed, unknown, revoked or expired key: sign in again) and
4403 (signed in, but this stream is not yours, or the key lacks the scope: do not retry).
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.apikeys.models import ApiKey
from portal.apikeys.services import KeyRejected, apikey_authenticate, apikey_effective_scopes
from portal.organisations.models import Membership, Organisation
from portal.users.selectors import session_passed_mfa, user_is_programme_manager

from .broadcast import CLUSTER_GROUP, organisation_group, user_group

NOT_SIGNED_IN = 4401
FORBIDDEN = 4403

USAGE_SCOPE = "usage:read"
PROGRAMME_SCOPE = "programme:read"


class StreamRefused(Exception):  # noqa: N818 - a refusal, told to the client as a close code
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Viewer:
    """Who is watching: a person (by session or by their key), or an organisation's service
    key (`user` None)."""

    user: object | None
    key: ApiKey | None = None
    scopes: frozenset[str] = frozenset()
    passed_mfa: bool = False  # a session whose sign-in included the second factor


def viewer_from_handshake(
    *, session_user, authorization: list[bytes], ip: str | None, session=None
) -> Viewer:
    """The key in `Authorization: Bearer <key>` when there is one (it wins over a session:
    browsers cannot set the header), else the session's person."""
    if authorization:
        parts = authorization[0].split() if len(authorization) == 1 else []
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            raise StreamRefused(NOT_SIGNED_IN)
        try:
            key = apikey_authenticate(raw=parts[1].decode("ascii"), ip=ip, record_use=False)
        except (UnicodeDecodeError, KeyRejected) as exc:
            raise StreamRefused(NOT_SIGNED_IN) from exc
        scopes = apikey_effective_scopes(key)
        if USAGE_SCOPE not in scopes:
            raise StreamRefused(FORBIDDEN)
        return Viewer(user=key.user if key.user_id else None, key=key, scopes=scopes)
    if session_user is None or not session_user.is_authenticated:
        raise StreamRefused(NOT_SIGNED_IN)
    return Viewer(
        user=session_user, passed_mfa=session_passed_mfa(session=session, user=session_user)
    )


def stream_group(*, viewer: Viewer, stream: str, organisation_public_id=None) -> str:
    """The group `viewer` may join for `stream` ("user", "organisation" or "cluster");
    StreamRefused otherwise."""
    if stream == "user":
        if viewer.user is None:  # a service key has no person of its own
            raise StreamRefused(FORBIDDEN)
        return user_group(viewer.user.pk)
    if stream == "organisation":
        organisation = Organisation.objects.filter(
            public_id=organisation_public_id, is_active=True
        ).first()
        if organisation is None:  # unknown or closed: told the same as "not yours"
            raise StreamRefused(FORBIDDEN)
        if viewer.user is None:
            allowed = viewer.key.organisation_id == organisation.pk
        else:
            allowed = Membership.objects.filter(
                organisation=organisation, user=viewer.user
            ).exists()
        if not allowed:
            raise StreamRefused(FORBIDDEN)
        return organisation_group(organisation.pk)
    if stream == "cluster":
        user = viewer.user
        if user is None or not user_is_programme_manager(user=user):
            raise StreamRefused(FORBIDDEN)
        # A browser session must have passed MFA (the programme pages' gate); a key must carry
        # programme:read, which only a programme manager's key can hold.
        allowed = PROGRAMME_SCOPE in viewer.scopes if viewer.key else viewer.passed_mfa
        if not allowed:
            raise StreamRefused(FORBIDDEN)
        return CLUSTER_GROUP
    raise StreamRefused(FORBIDDEN)


def live_stream_group(
    *,
    session_user,
    authorization: list[bytes],
    ip: str | None,
    stream: str,
    organisation_public_id=None,
    session=None,
) -> str:
    """The whole check, as one call for one trip to a database thread."""
    viewer = viewer_from_handshake(
        session_user=session_user, authorization=authorization, ip=ip, session=session
    )
    return stream_group(viewer=viewer, stream=stream, organisation_public_id=organisation_public_id)
