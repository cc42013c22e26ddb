"""Health: the beat's probe against a real llama.cpp engine process that is paused, resumed and
killed; the gateway stops seeing a replica that does not answer and sees it again when it does."""

import os
import signal
import socket
import time

import pytest

from inference.catalogue.starter_models import TINY_CHAT_NAME, starter_model_get
from inference.deployments import services
from inference.deployments.models import Deployment, Replica
from inference.deployments.selectors import replicas_serving
from inference.deployments.tasks import health_probe_task
from tests.inference.conftest import _stop, engine_start

State = Replica.State


@pytest.fixture
def engine(model_store, tmp_path):
    """An engine of our own (the session's shared ones must not be paused): the tiny model."""
    model_path = model_store / starter_model_get(TINY_CHAT_NAME).weights_path
    running, process = engine_start(
        model_path=model_path,
        alias=TINY_CHAT_NAME,
        workdir=tmp_path,
        extra_args=("--n_threads", "1", "--verbose", "false"),
    )
    yield running, process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
    _stop(process)


@pytest.fixture
def fast_probes(settings):
    settings.LLM_HEALTH_INTERVAL = 3  # a probe waits at most 1 s
    settings.LLM_HEALTH_FAILURES_TO_UNHEALTHY = 2


def states(replica) -> str:
    replica.refresh_from_db()
    return replica.state


def test_a_replica_leaves_rotation_when_its_engine_hangs_and_returns_when_it_answers(
    engine, model, fast_probes
):
    running, process = engine
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    # given an engine registered by hand: READY on its first probe
    replica = services.replica_register_external(
        deployment=deployment, base_url=running.base_url, api_key=running.api_key
    )
    assert replica.state == State.READY
    assert [t.replica_id for t in replicas_serving(model=model)] == [replica.pk]
    # when the engine hangs (SIGSTOP: it accepts nothing more)
    os.kill(process.pid, signal.SIGSTOP)
    # then one failed probe is not enough, the second takes it out of rotation
    assert health_probe_task() == {"probed": 1, "changed": 0}
    assert states(replica) == State.READY
    assert health_probe_task() == {"probed": 1, "changed": 1}
    assert states(replica) == State.UNHEALTHY
    assert replica.health_failures == 2
    assert replicas_serving(model=model) == []
    # when it answers again, one good probe brings it back
    os.kill(process.pid, signal.SIGCONT)
    assert health_probe_task() == {"probed": 1, "changed": 1}
    assert states(replica) == State.READY
    assert replica.health_failures == 0
    assert [t.replica_id for t in replicas_serving(model=model)] == [replica.pk]


def test_a_starting_replica_becomes_ready_on_its_first_answer_and_a_dead_one_leaves(
    engine, model, fast_probes
):
    running, process = engine
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    # given an engine that does not answer when it is registered
    os.kill(process.pid, signal.SIGSTOP)
    replica = services.replica_register_external(
        deployment=deployment, base_url=running.base_url, api_key=running.api_key
    )
    assert replica.state == State.STARTING
    # failed probes keep a starting replica starting (the start timeout is the reconciler's)
    health_probe_task()
    health_probe_task()
    assert states(replica) == State.STARTING
    # when it answers
    os.kill(process.pid, signal.SIGCONT)
    health_probe_task()
    assert states(replica) == State.READY
    # when the engine dies (connection refused), two probes take it out
    _stop(process)
    health_probe_task()
    health_probe_task()
    assert states(replica) == State.UNHEALTHY
    assert replica.message.startswith("no answer")


def test_a_probe_with_the_wrong_key_is_a_failure(engine, model, fast_probes):
    running, _process = engine
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    replica = services.replica_register_external(
        deployment=deployment, base_url=running.base_url, api_key=running.api_key
    )
    Replica.objects.filter(pk=replica.pk).update(api_key="not-the-engine-key")
    health_probe_task()
    health_probe_task()
    assert states(replica) == State.UNHEALTHY
    assert replica.message == "HTTP 401"


def test_silent_engines_are_probed_side_by_side(model, fast_probes):
    # given 20 ready replicas whose engine accepts connections and never answers
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    port = silent.getsockname()[1]
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    for _ in range(20):
        Replica.objects.create(
            deployment=deployment,
            state=State.READY,
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="k",
        )
    try:
        # when one round of probes runs (each waits at most 1 s)
        started = time.monotonic()
        result = health_probe_task()
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    # then every replica was probed, in about one timeout rather than twenty
    assert result == {"probed": 20, "changed": 0}
    assert elapsed < 5, elapsed
    assert set(Replica.objects.values_list("health_failures", flat=True)) == {1}
