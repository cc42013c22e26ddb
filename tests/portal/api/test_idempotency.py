"""`Idempotency-Key` on POST /credit-applications: one application however often the request is
sent, a replay of the first answer, refusals for a reused key, nothing kept after a failure."""

import threading

import pytest
from django.db import IntegrityError, connection
from rest_framework.test import APIClient

from portal.apikeys.models import IdempotencyRecord
from portal.credits.models import CreditApplication

from .conftest import API, APPLICATION, assert_error, key_client, make_key

URL = f"{API}/credit-applications"
JOIN_TIMEOUT_S = 60


def _post(client, body, key, **extra):
    return client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key, **extra)


@pytest.mark.django_db
def test_same_key_twice_creates_once_and_replays(organisation, owner_api):
    first = _post(owner_api, APPLICATION, "create-1")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    second = _post(owner_api, APPLICATION, "create-1")
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert CreditApplication.objects.count() == 1
    record = IdempotencyRecord.objects.get()
    assert record.state == IdempotencyRecord.State.DONE
    assert record.status_code == 201


@pytest.mark.django_db
def test_without_a_key_each_post_creates(organisation, owner_api):
    for _ in range(2):
        assert owner_api.post(URL, APPLICATION, format="json").status_code == 201
    assert CreditApplication.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_same_key_with_a_different_body_is_422(organisation, owner_api):
    assert _post(owner_api, APPLICATION, "create-1").status_code == 201
    response = _post(owner_api, {**APPLICATION, "title": "Something else"}, "create-1")
    assert_error(response, 422, "idempotency_key_reused")
    assert CreditApplication.objects.count() == 1


@pytest.mark.django_db
def test_same_key_on_another_path_is_422(organisation, owner, owner_api):
    created = _post(owner_api, APPLICATION, "create-1").json()
    response = owner_api.post(f"{URL}/{created['id']}/submit", HTTP_IDEMPOTENCY_KEY="create-1")
    # submit is not idempotent-aware: it just runs (and a key sent along is ignored) ...
    assert response.status_code == 200
    # ... but create with the key of a create replays, whatever happened since
    assert _post(owner_api, APPLICATION, "create-1").json()["state"] == "draft"


@pytest.mark.django_db
def test_keys_are_per_client(organisation, owner):
    first = key_client(make_key(user=owner, name="one")[1])
    second = key_client(make_key(user=owner, name="two")[1])
    assert _post(first, APPLICATION, "shared").status_code == 201
    response = _post(second, APPLICATION, "shared")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert CreditApplication.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 201, "tab\there"])
def test_an_unusable_key_is_400(organisation, owner_api, key):
    assert_error(_post(owner_api, APPLICATION, key), 400, "invalid")
    assert not CreditApplication.objects.exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_failed_first_request_leaves_nothing_and_a_corrected_retry_succeeds(
    organisation, owner_api
):
    bad = _post(owner_api, {**APPLICATION, "requested_gpu_hours": 0}, "retry-me")
    assert "requested_gpu_hours" in assert_error(bad, 400)["fields"]
    assert not IdempotencyRecord.objects.exists()
    refused = _post(owner_api, {**APPLICATION, "team_members": ["nobody"]}, "retry-me")
    assert_error(refused, 400)  # an ApplicationError from the view: nothing kept either
    assert not IdempotencyRecord.objects.exists()
    good = _post(owner_api, APPLICATION, "retry-me")
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good
    assert CreditApplication.objects.count() == 1
    assert _post(owner_api, APPLICATION, "retry-me")["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_a_forbidden_first_request_leaves_nothing(organisation, member):
    client = key_client(make_key(user=member)[1])
    assert_error(_post(client, APPLICATION, "k"), 403)
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_key_released_between_the_clash_and_the_lookup_is_not_a_server_error(
    organisation, owner, owner_key, monkeypatch
):
    """Another request held the key when ours tried to record it, and then failed and released
    it before ours looked it up (the window the concurrent test below can hit by chance)."""
    manager = IdempotencyRecord.objects
    real_create = manager.create
    clashes = []

    def create_that_clashes(**fields):
        if not clashes:
            clashes.append(fields["key"])  # someone else held it a moment ago, and let go
            raise IntegrityError("duplicate key value violates unique constraint")
        return real_create(**fields)

    monkeypatch.setattr(manager, "create", create_that_clashes)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner_key[1]}")
    response = _post(client, APPLICATION, "released")
    assert clashes == ["released"]
    assert response.status_code in (201, 409), response.status_code
    if response.status_code == 409:
        assert_error(response, 409)
    assert CreditApplication.objects.count() <= 1


# --- Real concurrency, on PostgreSQL --------------------------------------------------------


def _send(full_key, body, key, barrier, results):
    try:
        client = key_client(full_key, raise_request_exception=False)
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        response = _post(client, body, key)
        results.append(
            (
                response.status_code,
                response.get("Idempotent-Replayed"),
                response.json()
                if response["Content-Type"].startswith("application/json")
                else None,
            )
        )
    except Exception as exc:  # reported by the test
        results.append(("error", repr(exc), None))
    finally:
        connection.close()


def _race(full_key, body, key, threads=8):
    barrier = threading.Barrier(threads)
    results: list = []
    workers = [
        threading.Thread(target=_send, args=(full_key, body, key, barrier, results), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=JOIN_TIMEOUT_S)
    assert not [w for w in workers if w.is_alive()], "a request hung"
    return results


@pytest.fixture
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("Concurrent writers need PostgreSQL; `make test` runs this")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_postgresql_only")
@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_requests_with_one_key_create_exactly_one(organisation, owner, attempt):
    _, full = make_key(user=owner)
    results = _race(full, APPLICATION, f"race-{attempt}")
    assert len(results) == 8
    assert CreditApplication.objects.count() == 1, results
    created = [r for r in results if r[0] == 201 and r[1] is None]
    replayed = [r for r in results if r[0] == 201 and r[1] == "true"]
    in_flight = [r for r in results if r[0] == 409]
    assert len(created) == 1, results
    assert len(created) + len(replayed) + len(in_flight) == 8, results
    application_id = str(CreditApplication.objects.get().public_id)
    assert created[0][2]["id"] == application_id
    for _, _, body in replayed:
        assert body == created[0][2]
    for _, _, body in in_flight:
        assert body["error"]["code"] == "idempotency_in_flight"
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.DONE


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_postgresql_only")
def test_concurrent_failing_requests_with_one_key_are_never_server_errors(organisation, owner):
    _, full = make_key(user=owner)
    bad = {**APPLICATION, "team_members": ["nobody"]}
    results = _race(full, bad, "race-bad", threads=8)
    assert sorted({r[0] for r in results}) in ([400], [400, 409], [409, 400]), results
    assert not CreditApplication.objects.exists()
    assert not IdempotencyRecord.objects.exists()
