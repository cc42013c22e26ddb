"""A signed-in session's cost and its end: the session is read from the cache, its activity is
written at most once a minute, and none of that lets an ended session back in.

Transactional tests: the cache is filled only once a session's row is committed
(portal.users.sessions), as it is under a real server.
"""

import threading
import time

import pytest
from allauth.usersessions.models import UserSession
from django.contrib.auth import SESSION_KEY
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.users.middleware import LAST_ACTIVITY_KEY, RECORDED_KEY, TOUCH_SECONDS
from portal.users.services import user_sessions_end
from portal.users.sessions import SessionStore

pytestmark = pytest.mark.django_db(transaction=True)
PAGE = "apikeys:list"  # any page that needs a sign-in


def _signed_in(user) -> Client:
    browser = Client()
    browser.force_login(user)
    assert browser.get(reverse(PAGE)).status_code == 200  # the first request records it
    return browser


def _sql(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def test_a_signed_in_request_reads_its_session_from_the_cache_and_writes_nothing(user):
    browser = _signed_in(user)

    with CaptureQueriesContext(connection) as queries:
        assert browser.get(reverse(PAGE)).status_code == 200

    statements = _sql(queries)
    assert not [s for s in statements if "django_session" in s]
    assert not [s for s in statements if s.startswith(("INSERT", "UPDATE", "DELETE"))]


def test_the_first_request_records_the_session_and_later_ones_within_a_minute_do_not(user):
    # given a session that has just signed in: no record yet
    browser = Client()
    browser.force_login(user)
    key = browser.session.session_key
    assert not UserSession.objects.filter(session_key=key).exists()

    # when it makes a request, then the record "sign out everywhere" works from is there
    browser.get(reverse(PAGE))
    record = UserSession.objects.get(session_key=key)
    assert record.user == user
    assert record.ip == "127.0.0.1"

    # and the next requests within the minute do not write it again
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            browser.get(reverse(PAGE))
        assert not [s for s in _sql(queries) if "usersessions_usersession" in s]
    assert UserSession.objects.get(session_key=key).last_seen_at == record.last_seen_at

    # a minute later it is written once more
    session = browser.session
    session[LAST_ACTIVITY_KEY] = int(time.time()) - TOUCH_SECONDS
    session.save()
    browser.get(reverse(PAGE))
    assert UserSession.objects.get(session_key=key).last_seen_at > record.last_seen_at


def test_a_session_whose_key_changed_is_recorded_at_its_next_request(user):
    # given a recorded session whose key is cycled with its data kept (as Django's login does
    # for the same person), within the minute
    browser = _signed_in(user)
    session = browser.session
    session.cycle_key()
    session.save()
    browser.cookies["sessionid"] = session.session_key
    assert session[RECORDED_KEY] != session.session_key

    # when it makes a request, then the new key is recorded at once, so it can be ended
    assert browser.get(reverse(PAGE)).status_code == 200
    assert UserSession.objects.filter(session_key=session.session_key, user=user).exists()
    user_sessions_end(user_ids=[user.pk])
    assert browser.get(reverse(PAGE)).status_code == 302


def test_a_session_ended_everywhere_is_refused_though_it_was_cached(user):
    # given a stolen session, in use and so in the cache
    stolen = _signed_in(user)
    stolen.get(reverse(PAGE))

    # when its owner is signed out everywhere
    assert user_sessions_end(user_ids=[user.pk]) == 1

    # then the very next request with it is anonymous
    response = stolen.get(reverse(PAGE))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_a_read_racing_a_sign_out_does_not_put_the_session_back_in_the_cache(user):
    # given a session in the cache
    browser = _signed_in(user)
    key = browser.session.session_key
    seen = {}

    def another_request_reads_it():
        try:
            seen["data"] = SessionStore(key).load()
        finally:
            connection.close()

    # when its row is deleted in a transaction that has not committed yet (a suspension, say)
    # and another request reads the session meanwhile (it still finds the row: not committed)
    with transaction.atomic():
        user_sessions_end(user_ids=[user.pk])
        reader = threading.Thread(target=another_request_reads_it)
        reader.start()
        reader.join(timeout=30)
    assert seen["data"][SESSION_KEY] == str(user.pk)

    # then, committed, the session is in neither the database nor the cache: refused
    assert cache.get(SessionStore.cache_key_prefix + key) is None
    assert SessionStore(key).load() == {}
    assert browser.get(reverse(PAGE)).status_code == 302


def test_an_idle_session_still_ends_when_read_from_the_cache(user, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 3600
    browser = _signed_in(user)
    session = browser.session
    session[LAST_ACTIVITY_KEY] = int(time.time()) - 3601
    session.save()  # committed: the cache holds it

    assert browser.get(reverse(PAGE)).status_code == 302
    assert SessionStore(session.session_key).load() == {}
