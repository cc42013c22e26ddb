"""The reconciler against real Docker, with labelled stand-in containers (a `sleep`): which
replicas it fails, finishes or leaves alone, and which containers it removes."""

import contextlib
import datetime as dt
import subprocess
import uuid

import docker
import docker.errors
import pytest
from django.test import TestCase
from django.utils import timezone

from inference.deployments import firewall, reconcile, runner
from inference.deployments.models import Deployment, Replica

from .conftest import record_tasks

State = Replica.State
STAND_IN_IMAGE = "nac/base:bookworm"


@pytest.fixture(scope="module")
def docker_client():
    try:
        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get(STAND_IN_IMAGE)
    except docker.errors.DockerException as exc:
        pytest.fail(f"these tests need docker and {STAND_IN_IMAGE} (make images): {exc}")
    yield client
    client.close()


@pytest.fixture
def containers(docker_client):
    """Start labelled stand-ins; all removed at the end."""
    made = []

    def start(public_id, command=("sleep", "300")):
        container = docker_client.containers.run(
            STAND_IN_IMAGE,
            list(command),
            detach=True,
            labels={runner.LABEL_MANAGED: runner.MANAGED_BY, runner.LABEL_REPLICA: str(public_id)},
        )
        made.append(container)
        return container

    yield start
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture
def deployment(model):
    return Deployment.objects.create(model=model, replicas_wanted=0)


def replica(deployment, state, **fields):
    return Replica.objects.create(
        deployment=deployment, state=state, started_at=timezone.now(), **fields
    )


def exists(docker_client, container) -> bool:
    try:
        docker_client.containers.get(container.id)
    except docker.errors.NotFound:
        return False
    return True


def run():
    with TestCase.captureOnCommitCallbacks(execute=True):
        return reconcile.containers_reconcile()


def test_live_containers_stay_and_orphans_go(docker_client, containers, deployment):
    # given a serving replica and its container, an ended replica's leftover container, and a
    # container labelled as ours that no replica knows
    serving = replica(deployment, State.READY)
    own = containers(serving.public_id)
    Replica.objects.filter(pk=serving.pk).update(container_id=own.id)
    ended = replica(deployment, State.STOPPED)
    leftover = containers(ended.public_id)
    stranger = containers(uuid.uuid4())
    # when the reconciler runs
    result = run()
    # then only the serving one's container is left
    assert result == {"failed": 0, "stopped": 0, "orphans_removed": 2}
    assert exists(docker_client, own)
    assert not exists(docker_client, leftover)
    assert not exists(docker_client, stranger)
    serving.refresh_from_db()
    assert serving.state == State.READY


def test_a_vanished_or_exited_container_fails_its_replica(docker_client, containers, deployment):
    vanished = replica(deployment, State.READY, container_id="0" * 64)
    exited = replica(deployment, State.STARTING)
    dead = containers(exited.public_id, command=("true",))
    dead.wait(timeout=30)
    Replica.objects.filter(pk=exited.pk).update(container_id=dead.id)
    result = run()
    assert result["failed"] == 2
    vanished.refresh_from_db()
    exited.refresh_from_db()
    assert (vanished.state, vanished.message) == (State.FAILED, "The engine's container vanished.")
    assert (exited.state, exited.message) == (State.FAILED, "The engine's container is exited.")
    assert vanished.stopped_at is not None
    # the exited container is an orphan now: removed on the same pass
    assert not exists(docker_client, dead)


def test_a_lost_stop_is_finished(docker_client, containers, deployment, engine_images, monkeypatch):
    calls = record_tasks(monkeypatch, "deployments.replica_stop")
    gone = replica(deployment, State.STOPPING)
    still_there = replica(deployment, State.STOPPING)
    container = containers(still_there.public_id)
    Replica.objects.filter(pk=still_there.pk).update(
        container_id=container.id, updated_at=timezone.now() - dt.timedelta(minutes=5)
    )
    result = run()
    assert result["stopped"] == 1
    gone.refresh_from_db()
    assert gone.state == State.STOPPED
    # the other is asked to stop again; its container is not treated as an orphan
    assert calls == [("deployments.replica_stop", (still_there.pk,))]
    assert exists(docker_client, container)


def test_a_start_in_progress_is_left_alone_and_a_lost_one_fails(
    docker_client, containers, deployment
):
    # given a replica whose start task is making its container right now, and one whose start
    # task was lost long ago
    in_progress = replica(deployment, State.STARTING)
    being_made = containers(in_progress.public_id)
    lost = replica(deployment, State.STARTING)
    Replica.objects.filter(pk=lost.pk).update(started_at=timezone.now() - dt.timedelta(hours=1))
    result = run()
    assert result["failed"] == 1
    in_progress.refresh_from_db()
    lost.refresh_from_db()
    assert in_progress.state == State.STARTING
    assert exists(docker_client, being_made)
    assert (lost.state, lost.message) == (State.FAILED, "The engine did not start in time.")


def test_without_docker_the_database_half_still_runs(model, settings, docker_tasks):
    settings.DOCKER_URL = "unix:///nonexistent/docker.sock"
    deployment = Deployment.objects.create(model=model, replicas_wanted=1, gpus_per_replica=0)
    with TestCase.captureOnCommitCallbacks(execute=True):
        result = reconcile.reconcile()
    assert result["docker"] == "unavailable"
    assert result["added"] == 1
    replica = deployment.replicas.get()
    assert replica.state == State.STARTING
    assert docker_tasks == [("deployments.replica_start", (replica.pk,))]


def test_the_engine_firewall_is_put_back_while_engines_run(containers, deployment):
    # given an engine running and its network's firewall jump gone (a host firewall reload)
    with contextlib.closing(runner.docker_client()) as engine:
        net = runner.engine_network_ensure(engine)
    serving = replica(deployment, State.READY)
    own = containers(serving.public_id)
    Replica.objects.filter(pk=serving.pk).update(container_id=own.id)
    jump = ["-i", net.bridge, "-j", firewall.INPUT_CHAIN]
    subprocess.run(["iptables", "-D", "INPUT", *jump], check=True)  # noqa: S603,S607
    # when the reconciler runs, then the jump is back
    run()
    assert subprocess.run(["iptables", "-C", "INPUT", *jump]).returncode == 0  # noqa: S603,S607
