"""SessionIdleTimeoutMiddleware in its async form (under ASGI): the same timeout and
bookkeeping as the sync one (test_idle_timeout.py), and the async side of the request told
when it signed the session out."""

import asyncio
import time

import pytest
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.contrib.sessions.models import Session
from django.http import HttpResponse
from django.test import RequestFactory

from portal.users.middleware import LAST_ACTIVITY_KEY, RECORDED_KEY, SessionIdleTimeoutMiddleware

pytestmark = pytest.mark.django_db(transaction=True)


def _request(client, user=None, *, seconds_ago: float | None = None):
    """A request carrying `client`'s session cookie (signed in as `user`, last seen
    `seconds_ago`), through the session and authentication middleware."""
    if user is not None:
        client.force_login(user)
        session = client.session
        session[LAST_ACTIVITY_KEY] = int(time.time() - seconds_ago)
        session[RECORDED_KEY] = session.session_key
        session.save()
    request = RequestFactory().get("/", HTTP_COOKIE=client.cookies.output(header="", sep=";"))
    SessionMiddleware(lambda r: None).process_request(request)
    AuthenticationMiddleware(lambda r: None).process_request(request)
    return request


def _run(request):
    seen = {}

    async def view(request):
        seen["user"] = await request.auser()
        return HttpResponse("ok")

    middleware = SessionIdleTimeoutMiddleware(view)
    assert asyncio.iscoroutinefunction(middleware)
    response = asyncio.run(middleware(request))
    return response, seen["user"]


def test_an_idle_session_is_ended_and_the_view_sees_no_one(client, user, settings):
    # given a session last seen just over the timeout ago
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 3600
    request = _request(client, user, seconds_ago=3601)
    key = request.session.session_key
    # when the async middleware handles its request
    response, seen = _run(request)
    # then the view saw an anonymous request and the session is gone
    assert response.status_code == 200
    assert not seen.is_authenticated
    assert not Session.objects.filter(session_key=key).exists()


def test_an_active_session_goes_on_and_its_activity_is_noted(client, user, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 3600
    request = _request(client, user, seconds_ago=120)
    response, seen = _run(request)
    assert seen == user
    assert time.time() - request.session[LAST_ACTIVITY_KEY] < 5


def test_an_anonymous_request_passes_untouched(client):
    request = _request(client)
    response, seen = _run(request)
    assert response.status_code == 200
    assert not seen.is_authenticated
    assert LAST_ACTIVITY_KEY not in request.session
