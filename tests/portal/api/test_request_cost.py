"""What one API request costs the database: a browser session's no more than a key's, and
neither writes anything on an ordinary read (a key's last use and a session's activity are
written at most once a minute).

Transactional: a session is read from the cache only once its row is committed
(portal.users.sessions), as under a real server.
"""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.portal.api.conftest import bearer, make_key

pytestmark = pytest.mark.django_db(transaction=True)
BALANCE = "/api/v1/credits/balance"
WRITES = ("INSERT", "UPDATE", "DELETE")


def _cost(client) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(BALANCE)
    assert response.status_code == 200, response.content[:300]
    return [q["sql"] for q in queries.captured_queries]


def test_a_session_reads_the_balance_with_no_more_queries_than_a_key(owner, funded):
    # given the owner of a funded organisation, with a key and signed in in a browser, each
    # past its first request (which writes the key's last use and records the session)
    _key, full_key = make_key(user=owner, scopes=["credits:read"])
    keyed = Client(**bearer(full_key))
    browser = Client()
    browser.force_login(owner)
    assert _cost(keyed)
    assert _cost(browser)

    # when each reads the balance again, three times
    by_key = [_cost(keyed) for _ in range(3)]
    by_session = [_cost(browser) for _ in range(3)]

    # then the session costs no more queries than the key, and neither writes
    assert max(map(len, by_session)) <= min(map(len, by_key)), (by_session[0], by_key[0])
    for statements in by_key + by_session:
        assert not [s for s in statements if s.startswith(WRITES)], statements
    # and both read the same balance
    assert keyed.get(BALANCE).json() == browser.get(BALANCE).json()


def test_a_revoked_key_is_refused_at_once_though_its_use_was_just_recorded(owner, funded):
    # the key's last use is written at most once a minute; its revocation is not cached
    key, full_key = make_key(user=owner, scopes=["credits:read"])
    keyed = Client(**bearer(full_key))
    assert keyed.get(BALANCE).status_code == 200
    key.revoked_at = key.expires_at.__class__.now(tz=key.expires_at.tzinfo)
    key.save(update_fields=["revoked_at"])
    assert keyed.get(BALANCE).status_code == 401
