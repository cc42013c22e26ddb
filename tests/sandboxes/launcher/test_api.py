"""The sandbox API: inventory, catalogue, launch and its refusals, actions, and the hub's
internal API. (The end-to-end tests drive the same endpoints against a real hub.)"""

import pytest
from django.test import TestCase

from portal.apikeys.scopes import ALL_SCOPES, PROGRAMME_SCOPES
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher.models import Sandbox
from tests.portal.api.conftest import key_client, make_key

from .helpers import funded_founder, funded_student, gpus

pytestmark = pytest.mark.django_db
API = "/api/v1"
SECRET = "test-spawn-secret-0123456789abcdef"


def client_for(user, scopes=None):
    _key, full = make_key(user=user, scopes=sorted(scopes or ALL_SCOPES - PROGRAMME_SCOPES))
    return key_client(full)


def launch(client, **body):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(f"{API}/sandboxes", body, format="json")


def test_gpus_say_plainly_that_they_are_simulated():
    gpus(2)
    response = client_for(funded_student()).get(f"{API}/gpus")
    assert response.status_code == 200
    body = response.json()
    assert body["simulated"] is True
    assert len(body["devices"]) == 2
    assert all(d["uuid"].startswith("GPU-") and d["simulated"] for d in body["devices"])
    assert body["availability"][0]["free"] == 2


def test_profiles_show_runway_and_free_gpus_for_what_you_may_use():
    gpus(2)
    response = client_for(funded_student(hours=10)).get(f"{API}/profiles")
    assert response.status_code == 200
    by_slug = {p["slug"]: p for p in response.json()}
    assert "gpu-2" not in by_slug  # startups only
    assert by_slug["gpu-1"]["free_gpus"] == 2
    assert by_slug["gpu-1"]["runway_seconds"] == 10 * 3600
    assert by_slug["cpu-small"]["runway_seconds"] == 10 * 3600 * 20  # 0.05 per second


def test_launch_by_api_answers_202_with_the_sandbox(enqueued):
    gpus(2)
    client = client_for(funded_founder())
    response = launch(client, image="python-cpu", profile="gpu-1", name="Training")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "starting"
    assert body["name"] == "Training"
    assert len(body["gpus"]) == 1
    assert body["gpus_simulated"] is True
    assert body["url"] is None
    listed = client.get(f"{API}/sandboxes").json()["results"]
    assert [s["id"] for s in listed] == [body["id"]]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"image": "nope", "profile": "cpu-small"}, 400, "image"),
        ({"image": "python-cpu", "profile": "huge"}, 400, "profile"),
        ({"image": "python-cpu"}, 400, "profile"),
        ({"image": "python-cpu", "profile": "gpu-2"}, 403, None),  # startups only
        ({"image": "python-cpu", "profile": "gpu-1", "organisation": "x"}, 400, "organisation"),
        ({"image": ["python-cpu"], "profile": "cpu-small"}, 400, "image"),
    ],
)
def test_bad_launches_are_refused_clearly_and_leave_nothing(body, status, field, enqueued):
    gpus(2)
    response = launch(client_for(funded_student()), **body)
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["message"]
    if field:
        assert field in error["fields"]
    assert not Sandbox.objects.exists()
    assert not GpuAllocation.objects.exists()
    assert enqueued == []


def test_insufficient_runway_is_a_409_with_the_reason(enqueued):
    gpus(2)
    response = launch(client_for(funded_student(hours=0.2)), image="python-cpu", profile="gpu-1")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert "Not enough credits" in response.json()["error"]["message"]
    assert not Sandbox.objects.exists()


def test_a_second_launch_while_starting_is_a_409(enqueued):
    client = client_for(funded_student())
    assert launch(client, image="python-cpu", profile="cpu-small").status_code == 202
    response = launch(client, image="python-cpu", profile="cpu-small")
    assert response.status_code == 409
    assert "already starting" in response.json()["error"]["message"]
    assert Sandbox.objects.count() == 1


def test_sandboxes_of_others_are_invisible(enqueued):
    owner_client = client_for(funded_student())
    sandbox_id = launch(owner_client, image="python-cpu", profile="cpu-small").json()["id"]
    stranger = client_for(funded_student())
    assert stranger.get(f"{API}/sandboxes/{sandbox_id}").status_code == 404
    assert stranger.post(f"{API}/sandboxes/{sandbox_id}/stop").status_code == 404
    assert stranger.delete(f"{API}/sandboxes/{sandbox_id}").status_code == 404
    assert Sandbox.objects.get().status == "starting"


def test_read_scope_cannot_launch(enqueued):
    client = client_for(funded_student(), scopes=["sandboxes:read"])
    response = launch(client, image="python-cpu", profile="cpu-small")
    assert response.status_code == 403
    assert not Sandbox.objects.exists()


def test_stop_then_delete_with_a_clear_flag(enqueued):
    client = client_for(funded_student())
    sandbox_id = launch(client, image="python-cpu", profile="cpu-small").json()["id"]
    assert client.delete(f"{API}/sandboxes/{sandbox_id}").status_code == 409  # still live
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert client.post(f"{API}/sandboxes/{sandbox_id}/stop").json()["status"] == "stopping"
    Sandbox.objects.update(status="stopped")
    bad = client.delete(f"{API}/sandboxes/{sandbox_id}?delete_home=yes")
    assert bad.status_code == 400
    assert client.delete(f"{API}/sandboxes/{sandbox_id}").status_code == 204
    assert client.get(f"{API}/sandboxes/{sandbox_id}").status_code == 404


def test_access_token_needs_a_running_sandbox(enqueued):
    client = client_for(funded_student())
    sandbox_id = launch(client, image="python-cpu", profile="cpu-small").json()["id"]
    response = client.post(f"{API}/sandboxes/{sandbox_id}/access-token")
    assert response.status_code == 409


def test_access_token_when_the_hub_is_down_is_a_503_not_a_crash(enqueued):
    client = client_for(funded_student())
    sandbox_id = launch(client, image="python-cpu", profile="cpu-small").json()["id"]
    Sandbox.objects.update(status="running")
    response = client.post(f"{API}/sandboxes/{sandbox_id}/access-token")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


# --- The hub's internal API ------------------------------------------------------------------


def internal(client, path, body, secret=SECRET, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    return client.post(
        f"/internal/hub/{path}/", body, content_type="application/json", **headers, **extra
    )


def test_spawn_spec_needs_the_hub_secret(client, enqueued):
    student = funded_student()
    body = {"username": student.hub_username, "server_name": "sb-0000000000"}
    assert internal(client, "spawn-spec", body, secret=None).status_code == 401
    assert internal(client, "spawn-spec", body, secret="wrong").status_code == 401


@pytest.mark.parametrize(
    "body", ["not json", "[]", '{"username": 1, "server_name": "x"}', '{"username": "a"}']
)
def test_spawn_spec_refuses_malformed_bodies(client, body):
    response = internal(client, "spawn-spec", body)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_spawn_spec_answers_for_a_portal_start_and_refuses_anything_else(client, enqueued):
    student = funded_student()
    sandbox_id = launch(client_for(student), image="python-cpu", profile="cpu-private").json()["id"]
    sandbox = Sandbox.objects.get(public_id=sandbox_id)
    ok = internal(
        client,
        "spawn-spec",
        {"username": student.hub_username, "server_name": sandbox.server_name},
    )
    assert ok.status_code == 200
    assert ok.json()["egress"] == "internal"
    assert ok.json()["cpu_limit"] == 2.0
    foreign = internal(
        client, "spawn-spec", {"username": student.hub_username, "server_name": "sb-zzzzzzzzzz"}
    )
    assert foreign.status_code == 403
    assert "not launched from the portal" in foreign.json()["detail"]
    # Someone else's server name under my hub name: refused too.
    other = funded_student()
    stolen = internal(
        client, "spawn-spec", {"username": other.hub_username, "server_name": sandbox.server_name}
    )
    assert stolen.status_code == 403


def test_server_stopped_releases_a_running_sandbox(client, enqueued):
    gpus(1)
    founder = funded_founder()
    sandbox_id = launch(client_for(founder), image="python-cpu", profile="gpu-1").json()["id"]
    Sandbox.objects.update(status="running")
    sandbox = Sandbox.objects.get(public_id=sandbox_id)
    body = {"username": founder.hub_username, "server_name": sandbox.server_name}
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert internal(client, "server-stopped", body).status_code == 204
    sandbox.refresh_from_db()
    assert sandbox.status == "stopped"
    assert not GpuAllocation.objects.filter(released_at__isnull=True).exists()
    assert internal(client, "server-stopped", body).status_code == 204  # idempotent
