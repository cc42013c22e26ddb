"""What the gateway reads and reports: the serving replicas of a model, passive health, and
engines registered by hand."""

import http.server
import json
import threading

import pytest
from django.test import TestCase

from inference.deployments import services
from inference.deployments.models import Deployment, Replica
from inference.deployments.selectors import ReplicaTarget, replicas_serving
from portal.core.exceptions import ApplicationError

from .conftest import served_model

State = Replica.State


def replica(deployment, state, **fields):
    values = {"base_url": f"http://127.0.0.1:9/{state}/v1", "api_key": f"key-{state}"}
    values.update(fields)
    return Replica.objects.create(deployment=deployment, state=state, **values)


@pytest.fixture
def deployment(model, manager):
    return Deployment.objects.create(model=model, replicas_wanted=0, created_by=manager)


def test_replicas_serving_lists_only_ready_replicas_of_the_active_deployment(deployment, model):
    # given one replica in every state, and a ready one of another model
    by_state = {state: replica(deployment, state) for state in State.values}
    other = Deployment.objects.create(model=served_model(), replicas_wanted=0)
    replica(other, State.READY)
    # when
    targets = replicas_serving(model=model)
    # then only the ready one, with its address and its engine key
    ready = by_state[State.READY]
    assert targets == [ReplicaTarget(ready.pk, ready.public_id, ready.base_url, "key-ready")]
    assert replicas_serving(model=model.pk) == targets


def test_a_stopped_deployment_serves_nothing(deployment, model):
    replica(deployment, State.READY)
    deployment.state = Deployment.State.STOPPED
    deployment.save()
    assert replicas_serving(model=model) == []


@pytest.mark.parametrize("threshold", [1, 3])
def test_passive_reports_take_a_replica_out_after_the_threshold(
    deployment, model, settings, threshold
):
    # given a ready replica
    settings.LLM_HEALTH_FAILURES_TO_UNHEALTHY = threshold
    ready = replica(deployment, State.READY)
    # when the gateway reports one failure fewer than the threshold
    for _ in range(threshold - 1):
        assert services.replica_unhealthy_report(replica_id=ready.pk, reason="HTTP 502") is None
    # then it still serves
    assert [t.replica_id for t in replicas_serving(model=model)] == [ready.pk]
    # when one more comes
    changed = services.replica_unhealthy_report(replica_id=ready.pk, reason="connect refused")
    # then it is out of rotation, with the reason kept
    ready.refresh_from_db()
    assert changed == State.UNHEALTHY
    assert ready.state == State.UNHEALTHY
    assert ready.message == "connect refused"
    assert ready.health_failures == threshold
    assert replicas_serving(model=model) == []


def test_a_successful_probe_resets_the_count_of_passive_failures(deployment, settings):
    settings.LLM_HEALTH_FAILURES_TO_UNHEALTHY = 2
    ready = replica(deployment, State.READY)
    services.replica_unhealthy_report(replica_id=ready.pk, reason="HTTP 500")
    services.replica_probe_record(replica_id=ready.pk, failure="")
    services.replica_unhealthy_report(replica_id=ready.pk, reason="HTTP 500")
    ready.refresh_from_db()
    assert ready.state == State.READY
    assert ready.health_failures == 1


@pytest.mark.parametrize("state", [State.STARTING, State.STOPPING, State.STOPPED, State.FAILED])
def test_a_report_about_a_replica_that_does_not_serve_changes_nothing(deployment, state):
    row = replica(deployment, state)
    assert services.replica_unhealthy_report(replica_id=row.pk, reason="x") is None
    row.refresh_from_db()
    assert (row.state, row.health_failures, row.message) == (state, 0, "")


def test_a_report_about_an_unknown_replica_is_ignored(db):
    assert services.replica_unhealthy_report(replica_id=987654321, reason="x") is None


class _EngineLike(http.server.BaseHTTPRequestHandler):
    """Answers GET /v1/models like an OpenAI-compatible engine, for one bearer key."""

    key = "engine-secret"

    def do_GET(self):  # noqa: N802 - the handler's protocol
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"object": "list", "data": [{"id": "tiny-chat"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def engine_like():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EngineLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_an_external_engine_that_answers_is_ready_at_once(deployment, model, engine_like):
    # when
    with TestCase.captureOnCommitCallbacks(execute=True):
        registered = services.replica_register_external(
            deployment=deployment, base_url=engine_like + "/", api_key="engine-secret"
        )
    # then
    assert registered.state == State.READY
    assert registered.external is True
    assert registered.base_url == engine_like
    assert registered.last_healthy_at is not None
    assert replicas_serving(model=model) == [
        ReplicaTarget(registered.pk, registered.public_id, engine_like, "engine-secret")
    ]


def test_an_external_engine_with_the_wrong_key_waits_for_a_good_probe(
    deployment, model, engine_like
):
    registered = services.replica_register_external(
        deployment=deployment, base_url=engine_like, api_key="wrong"
    )
    assert registered.state == State.STARTING
    assert replicas_serving(model=model) == []


@pytest.mark.parametrize(
    "base_url",
    [
        "file:///etc/passwd",
        "127.0.0.1:8000/v1",
        "http://user:pw@127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1?x=1",
        "",
    ],
)
def test_a_bad_external_address_is_refused_and_nothing_is_registered(deployment, base_url):
    with pytest.raises(ApplicationError):
        services.replica_register_external(deployment=deployment, base_url=base_url, api_key="k")
    assert not Replica.objects.exists()


def test_an_external_engine_cannot_join_a_stopped_deployment(deployment, engine_like):
    deployment.state = Deployment.State.STOPPED
    deployment.save()
    with pytest.raises(ApplicationError):
        services.replica_register_external(
            deployment=deployment, base_url=engine_like, api_key="engine-secret"
        )
    assert not Replica.objects.exists()
