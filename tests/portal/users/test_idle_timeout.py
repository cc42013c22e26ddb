"""The idle session timeout: a signed-in session ends after SESSION_IDLE_TIMEOUT_SECONDS
without a request, and an active one is touched at most once a minute (no database write on
every request)."""

import time

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.users.middleware import LAST_ACTIVITY_KEY, RECORDED_KEY, TOUCH_SECONDS

pytestmark = pytest.mark.django_db
PAGE = "apikeys:list"  # any page that needs a sign-in


def _last_seen(client, seconds_ago: float) -> None:
    """As if the session's last request, which recorded it, came `seconds_ago`."""
    session = client.session
    session[LAST_ACTIVITY_KEY] = int(time.time() - seconds_ago)
    session[RECORDED_KEY] = session.session_key
    session.save()


def test_a_session_idle_for_longer_than_the_timeout_ends(client, user, settings):
    # given a signed-in session whose last request was just over the timeout ago (a stolen
    # cookie, or a browser left open in a lab)
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 3600
    client.force_login(user)
    key = client.session.session_key
    _last_seen(client, 3601)

    # when the next request comes
    response = client.get(reverse(PAGE))

    # then it is anonymous (sent to sign in), the session is gone, and the sign-out audited
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert not Session.objects.filter(session_key=key).exists()
    assert AuditEvent.objects.filter(actor=user, action="auth.signed_out").exists()


def test_a_session_used_within_the_timeout_goes_on(client, user, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 3600
    client.force_login(user)
    _last_seen(client, 3500)
    assert client.get(reverse(PAGE)).status_code == 200
    assert time.time() - client.session[LAST_ACTIVITY_KEY] < 5  # the clock starts again


def test_an_active_session_is_written_at_most_once_a_minute(client, user):
    # given a session seen a moment ago
    client.force_login(user)
    _last_seen(client, 1)
    session_writes = 0

    # when it makes requests within the minute
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse(PAGE)).status_code == 200
        session_writes += sum(
            'UPDATE "django_session"' in q["sql"] or 'INSERT INTO "django_session"' in q["sql"]
            for q in queries.captured_queries
        )

    # then the session row is not written; after a minute it is, once
    assert session_writes == 0
    _last_seen(client, TOUCH_SECONDS)
    with CaptureQueriesContext(connection) as queries:
        client.get(reverse(PAGE))
    assert any('UPDATE "django_session"' in q["sql"] for q in queries.captured_queries)
