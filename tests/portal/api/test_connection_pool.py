"""The server `make run` starts reuses its PostgreSQL connections and never leaks one.

A real uvicorn serving portal.asgi (the development settings, plus the bench's three views:
tests/benchmarks/api_urls.py) on the test database, with a pool of 4: 300 requests from 4
clients, by key and by session, refused keys, unknown routes, views that fail inside a
transaction, and requests the client gives up on mid-query. A connection borrowed and never
given back would run a pool of 4 dry within a few of them (each later request waiting, then
failing); the pool never opens more than its maximum, so every answer is checked as well as
PostgreSQL's count afterwards.
"""

import asyncio
import os
import tempfile

import httpx
import pytest
from django.conf import settings
from django.test import Client

from tests.benchmarks import common
from tests.benchmarks.api_soak import BALANCE, server_connections, soak
from tests.portal.api.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)  # the server must see the rows committed

POOL_MAX_SIZE = 4
APPLICATION_NAME = "portal-pool-test"


def _database_url(**query) -> str:
    database = settings.DATABASES["default"]
    user = database["USER"] or "postgres"
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    host = database["HOST"] or "127.0.0.1"
    port = database["PORT"] or 5432
    query = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgres://{user}{password}@{host}:{port}/{database['NAME']}?{query}"


@pytest.fixture
def server(transactional_db):
    """The portal under uvicorn on a free port, sharing the test database, Redis, secret key
    and API-key pepper with this process: (base URL, its log)."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the pool is PostgreSQL's (SQLite has none)")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.benchmarks.api_settings",
        "DATABASE_URL": _database_url(application_name=APPLICATION_NAME),
        "DATABASE_POOL_MAX_SIZE": str(POOL_MAX_SIZE),
        "DATABASE_POOL_MIN_SIZE": "1",
        "DATABASE_POOL_TIMEOUT_SECONDS": "3",
        "DEBUG": "False",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECRET_KEY": settings.SECRET_KEY,
        "API_KEY_PEPPER": settings.API_KEY_PEPPER,
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        "LOG_LEVEL": "CRITICAL",
    }
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the server writes it until the end
    port = common.free_port()
    process = common.uvicorn_start(port, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        common.server_wait(base, process)
        yield base, log
    finally:
        common.server_stop(process)
        log.close()


def test_a_soak_of_every_kind_of_request_leaves_no_more_connections_than_the_pool(
    server, owner, funded
):
    # given a founder with a funded organisation, a key and a signed-in browser session
    base, log = server
    _key, full_key = make_key(user=owner, scopes=["credits:read"])
    browser = Client()
    browser.force_login(owner)
    cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}

    # when 300 requests of every kind come from 4 clients at once
    done, wrong = asyncio.run(
        soak(
            base,
            requests=300,
            clients=4,
            key=full_key,
            cookies=cookies,
            account=str(funded.public_id),
        )
    )

    # then each got its answer (none waited for a connection in vain), some were really cut
    # off mid-query, the server holds at least one connection (reused, not one per request)
    # and no more than its pool, and it still answers
    log.seek(0)
    assert wrong == {}, log.read()[-3000:]
    assert sum(done.values()) == 300
    assert done[("key", 200)] == 90
    assert done[("session", 200)] == 60
    assert done[("error", 500)] == 30
    assert done[("cancelled", None)] > 0
    after = server_connections(
        _database_url().split("?")[0].rsplit("/", 1)[0] + "/postgres",
        database=settings.DATABASES["default"]["NAME"],
        application_name=APPLICATION_NAME,
    )
    assert 1 <= after <= POOL_MAX_SIZE
    response = httpx.get(base + BALANCE, headers={"Authorization": f"Bearer {full_key}"})
    assert response.status_code == 200
    assert response.json()["account"] == str(funded.public_id)
