"""A signed-in session's activity: the idle timeout, and the record of the session that
"sign out everywhere" works from, both written at most once a TOUCH_SECONDS.

The idle timeout ends a session after SESSION_IDLE_TIMEOUT_SECONDS without a request, whatever
its absolute age (SESSION_COOKIE_AGE). allauth's usersessions keeps one row per session, by
person (users.services.user_sessions_end reads it); its own middleware writes that row on
every request (a get_or_create and an UPDATE of last_seen_at), which made a browser's API
request cost twice the queries of a key's. This middleware takes its place and writes it as
API keys write last_used_at: at most once a minute.
"""

import time

from allauth.usersessions.models import UserSession
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.models import AnonymousUser

# When the session last saw a request (Unix seconds). Written at most once a TOUCH_SECONDS, so
# an active session costs no database write per request (sessions are rows; SESSION_ENGINE).
LAST_ACTIVITY_KEY = "portal_last_activity"
# The session key allauth's record was last written for: a session whose key changed (Django's
# login cycles it, keeping the data) is recorded at its next request, not a minute later.
RECORDED_KEY = "portal_user_session_recorded"
TOUCH_SECONDS = 60


def session_idle_expired(session, *, now: float | None = None) -> bool:
    """The session has gone longer than the idle timeout without a request."""
    last = session.get(LAST_ACTIVITY_KEY)
    now = time.time() if now is None else now
    return isinstance(last, int | float) and now - last >= settings.SESSION_IDLE_TIMEOUT_SECONDS


def _activity_due(session, *, now: float) -> bool:
    last = session.get(LAST_ACTIVITY_KEY)
    stale = not isinstance(last, int | float) or now - last >= TOUCH_SECONDS
    return stale or session.get(RECORDED_KEY) != session.session_key


class SessionIdleTimeoutMiddleware:
    """Signs out a session that has been idle too long (the request goes on as anonymous: a
    page that needs a sign-in sends the person to it); for the others, notes the activity and
    records the session (allauth's UserSession: who, from where, last seen) when a minute has
    passed or the session is new. After AuthenticationMiddleware, before anything that reads
    who is signed in; in place of allauth's UserSessionsMiddleware.

    Sync and async alike: under ASGI an anonymous request (most of them: static pages, the
    health check) passes without a thread hop; a signed-in one makes one for its session's
    bookkeeping, as before."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        if request.user.is_authenticated:
            _session_activity(request)
        return self.get_response(request)

    async def _acall(self, request):
        user = await request.auser()
        if user.is_authenticated and await sync_to_async(_session_activity)(request):
            # Signed out: what the async side reads of the user (its own cache) says so too.
            request.auser = _anonymous
        return await self.get_response(request)


async def _anonymous():
    return AnonymousUser()


def _session_activity(request) -> bool:
    """The idle timeout and the activity record of a signed-in request; True when it ended
    the session."""
    now = time.time()
    session = request.session
    if session_idle_expired(session, now=now):
        logout(request)  # deletes the session row; the sign-out is audited
        return True
    if _activity_due(session, now=now):
        session[LAST_ACTIVITY_KEY] = int(now)
        session[RECORDED_KEY] = session.session_key
        UserSession.objects.create_from_request(request)
    return False
