import json

import pytest
from django.urls import reverse

from portal.core import health


@pytest.mark.django_db
def test_healthz_answers_without_touching_dependencies(client, django_assert_num_queries):
    # given a running process / when it is asked whether it is alive
    with django_assert_num_queries(0):
        response = client.get(reverse("healthz"))
    # then it says so without a database query
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(client):
    # given no hub where HUB_API_URL points (the end-to-end tests check it with a real one)
    response = client.get(reverse("readyz"))
    assert response.status_code == 503
    body = response.json()
    assert set(body["checks"]) == {"database", "redis", "hub"}
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["hub"]["ok"] is False
    assert body["checks"]["hub"]["error"] == "ConnectError"


@pytest.mark.django_db
def test_readyz_is_503_when_redis_does_not_answer(client, settings):
    # given a Redis URL where nothing listens (a closed port on this host)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get(reverse("readyz"))
    # then readiness fails with detail naming the dependency, and no connection string leaks
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert "127.0.0.1" not in response.content.decode()


def test_readiness_probe_failure_never_raises(monkeypatch):
    def broken():
        raise RuntimeError("boom with password=secret")

    monkeypatch.setitem(health.PROBES, "database", broken)
    monkeypatch.setitem(health.PROBES, "redis", lambda: None)
    results = {r.name: r for r in health.readiness()}
    assert results["database"].ok is False
    assert results["database"].error == "RuntimeError"
    assert results["redis"].ok is True


def test_a_server_error_under_the_api_answers_in_the_error_shape(rf):
    from portal.core.views import server_error

    response = server_error(rf.get("/api/v1/me"))
    assert response.status_code == 500
    assert json.loads(response.content)["error"]["code"] == "server_error"
    assert server_error(rf.get("/")).status_code == 500
