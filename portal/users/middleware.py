"""The idle session timeout: a signed-in session ends after SESSION_IDLE_TIMEOUT_SECONDS without
a request, whatever its absolute age (SESSION_COOKIE_AGE)."""

import time

from django.conf import settings
from django.contrib.auth import logout

# When the session last saw a request (Unix seconds). Written at most once a TOUCH_SECONDS, so
# an active session costs no database write per request (sessions are rows; SESSION_ENGINE).
LAST_ACTIVITY_KEY = "portal_last_activity"
TOUCH_SECONDS = 60


def session_idle_expired(session, *, now: float | None = None) -> bool:
    """The session has gone longer than the idle timeout without a request."""
    last = session.get(LAST_ACTIVITY_KEY)
    now = time.time() if now is None else now
    return isinstance(last, int | float) and now - last >= settings.SESSION_IDLE_TIMEOUT_SECONDS


class SessionIdleTimeoutMiddleware:
    """Signs out a session that has been idle too long (the request goes on as anonymous: a
    page that needs a sign-in sends the person to it), and notes the activity of the others.
    After AuthenticationMiddleware, before anything that reads who is signed in."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = time.time()
            if session_idle_expired(request.session, now=now):
                logout(request)  # deletes the session row; the sign-out is audited
            else:
                last = request.session.get(LAST_ACTIVITY_KEY)
                if not isinstance(last, int | float) or now - last >= TOUCH_SECONDS:
                    request.session[LAST_ACTIVITY_KEY] = int(now)
        return self.get_response(request)
