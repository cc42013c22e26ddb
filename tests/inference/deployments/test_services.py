"""Deployments on the portal's side: the replica state machine, placing replicas on GPUs (or in
line), scaling, stopping, restarts and what serving costs. Docker tasks are recorded here; the
containers are in test_containers.py."""

import datetime as dt

import pytest
from django.test import TestCase
from django.utils import timezone

from inference.deployments import services
from inference.deployments.models import Deployment, Replica
from inference.deployments.selectors import serving_gpu_seconds
from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError
from sandboxes.gpus.models import GpuAllocation, GpuWait
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import ResourceProfile, SandboxImage
from tests.sandboxes.launcher.helpers import funded_student, tasks_recorded

from .conftest import gpus, served_model

State = Replica.State


def committed(service, **kwargs):
    """Run a service and what it left for after the commit (recorded tasks, queue advances)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return service(**kwargs)


def open_allocations(replica=None):
    allocations = GpuAllocation.objects.filter(released_at__isnull=True)
    return allocations.filter(replica=replica) if replica is not None else allocations


# --- The state machine ------------------------------------------------------------------------

ILLEGAL = [
    (State.STOPPED, State.READY),
    (State.STOPPED, State.STARTING),
    (State.FAILED, State.READY),
    (State.FAILED, State.STOPPING),
    (State.QUEUED, State.READY),
    (State.REQUESTED, State.READY),
    (State.STARTING, State.UNHEALTHY),
    (State.STOPPING, State.READY),
    (State.READY, State.QUEUED),
    (State.UNHEALTHY, State.STARTING),
]


@pytest.mark.parametrize(("from_state", "to_state"), ILLEGAL)
def test_the_state_machine_refuses_illegal_moves(model, from_state, to_state):
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    replica = Replica.objects.create(deployment=deployment, state=from_state)
    with pytest.raises(services.IllegalTransition):
        services._move(replica, to_state)
    replica.refresh_from_db()
    assert replica.state == from_state


def test_every_state_is_in_the_state_machine_and_ended_states_lead_nowhere():
    assert set(services.TRANSITIONS) == set(State.values)
    assert services.TRANSITIONS[State.STOPPED] == frozenset()
    assert services.TRANSITIONS[State.FAILED] == frozenset()


def test_a_probe_of_an_ended_replica_changes_nothing(model):
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    for state in (State.STOPPED, State.FAILED, State.STOPPING, State.QUEUED):
        replica = Replica.objects.create(deployment=deployment, state=state)
        assert services.replica_probe_record(replica_id=replica.pk, failure="") is None
        replica.refresh_from_db()
        assert replica.state == state


# --- Creating a deployment ---------------------------------------------------------------------


def test_a_deployment_takes_its_gpus_and_starts_its_replicas(model, manager, docker_tasks):
    # given two simulated GPUs
    gpus("2xH100-80GB")
    # when a manager deploys the model on 1 GPU × 2 replicas
    deployment = committed(
        services.deployment_create,
        model=model,
        gpus_per_replica=1,
        replicas=2,
        acting_user=manager,
    )
    # then each replica holds one different GPU and its container is asked for
    replicas = list(deployment.replicas.order_by("pk"))
    assert [r.state for r in replicas] == [State.STARTING, State.STARTING]
    held = [list(open_allocations(r).values_list("device__uuid", flat=True)) for r in replicas]
    assert [len(h) for h in held] == [1, 1]
    assert held[0] != held[1]
    assert [r.gpu_uuids for r in replicas] == held
    assert all(r.started_at is not None for r in replicas)
    assert docker_tasks == [("deployments.replica_start", (r.pk,)) for r in replicas]
    # and each replica has its own engine key
    assert len({r.api_key for r in replicas}) == 2
    assert all(len(r.api_key) >= 40 for r in replicas)
    event = AuditEvent.objects.get(action="llm_deployment.created")
    assert event.actor == manager
    assert event.data["replicas"] == 2


def test_a_cpu_deployment_takes_no_gpu(model, manager, docker_tasks):
    gpus("1xH100-80GB")
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=0, replicas=1, acting_user=manager
    )
    replica = deployment.replicas.get()
    assert replica.state == State.STARTING
    assert replica.gpu_uuids == []
    assert not open_allocations().exists()


@pytest.mark.parametrize(
    ("gpus_per_replica", "replicas"),
    [(-1, 1), (17, 1), (1, -1), (1, 65), ("1", 1), (3, 1)],
)
def test_a_bad_deployment_is_refused_and_leaves_nothing(
    model, manager, docker_tasks, gpus_per_replica, replicas
):
    gpus("2xH100-80GB")  # 3 GPUs per replica could never be placed
    with pytest.raises(ApplicationError):
        services.deployment_create(
            model=model, gpus_per_replica=gpus_per_replica, replicas=replicas, acting_user=manager
        )
    assert not Deployment.objects.exists()
    assert not Replica.objects.exists()
    assert not open_allocations().exists()
    assert not AuditEvent.objects.filter(action__startswith="llm_deployment").exists()


def test_a_model_is_deployed_once(model, manager, docker_tasks):
    services.deployment_create(model=model, gpus_per_replica=0, replicas=1, acting_user=manager)
    with pytest.raises(ApplicationError) as refused:
        services.deployment_create(model=model, gpus_per_replica=0, replicas=1, acting_user=manager)
    assert refused.value.code == "conflict"
    assert Deployment.objects.count() == 1
    assert Replica.objects.count() == 1


def test_a_model_without_an_engine_image_or_not_offered_is_refused(model, manager, settings):
    settings.LLM_ENGINE_IMAGES = {"vllm": "nac/llm-vllm:test"}
    with pytest.raises(ApplicationError):
        services.deployment_create(model=model, gpus_per_replica=0, replicas=1, acting_user=manager)
    settings.LLM_ENGINE_IMAGES = {"llama.cpp": "nac/llm-llamacpp:test"}
    retired = served_model(is_active=False)
    with pytest.raises(ApplicationError):
        services.deployment_create(
            model=retired, gpus_per_replica=0, replicas=1, acting_user=manager
        )
    assert not Deployment.objects.exists()


# --- GPUs: the line, and the sandboxes beside it -------------------------------------------------


def test_a_replica_that_cannot_get_gpus_waits_and_starts_when_they_free(
    model, manager, docker_tasks
):
    # given one GPU, taken by the first replica
    gpus("1xH100-80GB")
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=1, replicas=2, acting_user=manager
    )
    first, second = deployment.replicas.order_by("pk")
    assert (first.state, second.state) == (State.STARTING, State.QUEUED)
    assert second.queued_at is not None
    assert GpuWait.objects.filter(replica=second).exists()
    assert not open_allocations(second).exists()
    # when the first one ends (its container exited)
    committed(services.replica_mark_failed, replica_id=first.pk, message="exited")
    # then the waiting one gets the GPU and starts, and leaves the line
    second.refresh_from_db()
    assert second.state == State.STARTING
    assert open_allocations(second).count() == 1
    assert not GpuWait.objects.exists()
    assert ("deployments.replica_start", (second.pk,)) in docker_tasks


def test_a_waiting_replica_is_not_overtaken_by_a_sandbox_that_came_later(
    model, manager, docker_tasks, monkeypatch
):
    # given a replica waiting for the only GPU, held by another replica
    tasks_recorded(monkeypatch, [], "sandbox_start", "sandbox_stop")
    gpus("1xH100-80GB")
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=1, replicas=2, acting_user=manager
    )
    holder, waiting = deployment.replicas.order_by("pk")
    # when a sandbox asking for a GPU is launched, then the holder ends
    image = SandboxImage.objects.filter(is_active=True).first()
    profile = ResourceProfile.objects.filter(gpu_count=1, mig_profile="").first()
    assert image is not None
    assert profile is not None
    student = funded_student()
    sandbox = committed(launcher.sandbox_launch, user=student, image=image, profile=profile)
    assert sandbox.status == "queued"
    services.replica_mark_failed(replica_id=holder.pk, message="exited")
    # and the sandboxes' line moves first
    assert launcher.queue_advance() == []
    # then the sandbox did not take the GPU the replica, first in line, waits for
    sandbox.refresh_from_db()
    assert sandbox.status == "queued"
    assert not GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True).exists()
    # and the replicas' line gives it to the replica
    assert committed(services.replicas_queue_advance) == [waiting.pk]
    waiting.refresh_from_db()
    assert waiting.state == State.STARTING


def test_a_replica_does_not_overtake_a_sandbox_that_waited_longer(
    model, manager, docker_tasks, monkeypatch
):
    tasks_recorded(monkeypatch, [], "sandbox_start", "sandbox_stop")
    # given the only GPU held by a sandbox, and a second sandbox waiting for it
    gpus("1xH100-80GB")
    image = SandboxImage.objects.filter(is_active=True).first()
    profile = ResourceProfile.objects.filter(gpu_count=1, mig_profile="").first()
    first = committed(launcher.sandbox_launch, user=funded_student(), image=image, profile=profile)
    second = committed(launcher.sandbox_launch, user=funded_student(), image=image, profile=profile)
    assert (first.status, second.status) == ("starting", "queued")
    # when a model is deployed on 1 GPU
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=1, replicas=1, acting_user=manager
    )
    replica = deployment.replicas.get()
    assert replica.state == State.QUEUED
    # and the first sandbox stops, and the replicas' line moves first
    launcher.sandbox_mark_stopped(sandbox_id=first.pk, reason="done")
    assert services.replicas_queue_advance() == []
    # then the replica did not take the GPU the sandbox that waited longer waits for
    replica.refresh_from_db()
    assert replica.state == State.QUEUED
    assert not open_allocations(replica).exists()
    # and the sandboxes' line gives it to the sandbox
    assert committed(launcher.queue_advance) == [second.pk]
    second.refresh_from_db()
    assert second.status == "starting"
    # and gets it when that sandbox stops
    committed(launcher.sandbox_mark_stopped, sandbox_id=second.pk, reason="done")
    replica.refresh_from_db()
    assert replica.state == State.STARTING
    assert open_allocations(replica).count() == 1


# --- Scaling and stopping -------------------------------------------------------------------------


def test_scaling_up_adds_replicas_and_down_stops_the_newest_first(model, manager, docker_tasks):
    gpus("2xH100-80GB")
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=1, replicas=1, acting_user=manager
    )
    first = deployment.replicas.get()
    committed(services.replica_probe_record, replica_id=first.pk, failure="")  # first serves
    # when scaled to 3 (one must wait: 2 GPUs)
    committed(services.deployment_scale, deployment=deployment, replicas=3, acting_user=manager)
    states = list(deployment.replicas.order_by("pk").values_list("state", flat=True))
    assert states == [State.READY, State.STARTING, State.QUEUED]
    # when scaled back to 1
    docker_tasks.clear()
    committed(services.deployment_scale, deployment=deployment, replicas=1, acting_user=manager)
    # then the two newest go (the queued one leaves the line at once), the serving one stays
    first_, second, third = deployment.replicas.order_by("pk")
    assert (first_.state, second.state, third.state) == (
        State.READY,
        State.STOPPING,
        State.STOPPED,
    )
    assert docker_tasks == [("deployments.replica_stop", (second.pk,))]
    assert not GpuWait.objects.exists()
    deployment.refresh_from_db()
    assert deployment.replicas_wanted == 1
    scaled = AuditEvent.objects.filter(action="llm_deployment.scaled").order_by("pk")
    assert [(e.data["from"], e.data["to"]) for e in scaled] == [(1, 3), (3, 1)]


def test_stopping_a_deployment_stops_every_replica_and_releases_their_gpus(
    model, manager, docker_tasks
):
    gpus("2xH100-80GB")
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=1, replicas=2, acting_user=manager
    )
    docker_tasks.clear()
    committed(services.deployment_stop, deployment=deployment, acting_user=manager)
    replicas = list(deployment.replicas.order_by("pk"))
    assert [r.state for r in replicas] == [State.STOPPING, State.STOPPING]
    # the GPUs are held until the containers are gone
    assert open_allocations().count() == 2
    for replica in replicas:
        committed(services.replica_mark_stopped, replica_id=replica.pk)
    assert not open_allocations().exists()
    for replica in deployment.replicas.all():
        assert replica.state == State.STOPPED
        assert replica.stopped_at is not None
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.STOPPED
    # a second stop changes nothing and is not audited again
    committed(services.deployment_stop, deployment=deployment, acting_user=manager)
    assert AuditEvent.objects.filter(action="llm_deployment.stopped").count() == 1
    # and a stopped deployment cannot be scaled
    with pytest.raises(ApplicationError):
        services.deployment_scale(deployment=deployment, replicas=2, acting_user=manager)
    assert deployment.replicas.count() == 2


def test_a_container_that_ends_unasked_is_a_failure(model, manager, docker_tasks):
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=0, replicas=1, acting_user=manager
    )
    replica = deployment.replicas.get()
    assert services.replica_mark_stopped(replica_id=replica.pk) is True
    replica.refresh_from_db()
    assert replica.state == State.FAILED
    assert services.replica_mark_stopped(replica_id=replica.pk) is False


def test_a_stopped_replica_does_not_take_a_late_container(model, manager, docker_tasks):
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=0, replicas=1, acting_user=manager
    )
    replica = deployment.replicas.get()
    committed(services.deployment_stop, deployment=deployment, acting_user=manager)
    committed(services.replica_mark_stopped, replica_id=replica.pk)
    assert not services.replica_container_started(
        replica_id=replica.pk, container_id="abc", base_url="http://172.30.2.9:8000/v1"
    )
    replica.refresh_from_db()
    assert replica.container_id == ""
    assert replica.base_url == ""


# --- Restarts -----------------------------------------------------------------------------------


def test_failed_replicas_are_replaced_after_a_growing_bounded_wait(model, manager, docker_tasks):
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=0, replicas=1, acting_user=manager
    )
    now = timezone.now()
    waits = []
    for _ in range(8):
        replica = deployment.replicas.filter(state__in=services.COUNTED_STATES).get()
        committed(services.replica_mark_failed, replica_id=replica.pk, message="crashed")
        # right after a failure, no replacement yet
        assert committed(services.deployment_reconcile, deployment_id=deployment.pk) == []
        waits.append(services.restart_wait_seconds(deployment=deployment, now=now))
        # once the wait is over, one replacement
        Replica.objects.filter(pk=replica.pk).update(
            updated_at=timezone.now() - dt.timedelta(seconds=601)
        )
        added = committed(services.deployment_reconcile, deployment_id=deployment.pk)
        assert len(added) == 1
    assert waits[:4] == [10, 20, 40, 80]
    assert max(waits) == 600
    assert deployment.replicas.filter(state__in=services.COUNTED_STATES).count() == 1


def test_the_reconciler_leaves_external_replicas_alone(model, manager, docker_tasks):
    deployment = committed(
        services.deployment_create, model=model, gpus_per_replica=0, replicas=0, acting_user=manager
    )
    external = Replica.objects.create(
        deployment=deployment, state=State.READY, external=True, base_url="http://127.0.0.1:9/v1"
    )
    assert committed(services.deployment_reconcile, deployment_id=deployment.pk) == []
    external.refresh_from_db()
    assert external.state == State.READY
    assert docker_tasks == []


# --- What serving costs ------------------------------------------------------------------------


def test_serving_gpu_seconds_counts_each_replicas_gpus_inside_the_period(model):
    # given: a 2-GPU replica that held them 10:00-11:00, a 1-GPU one from 10:30 still running,
    # a CPU replica, and another model's replica
    start = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)
    deployment = Deployment.objects.create(model=model, replicas_wanted=0)
    Replica.objects.create(
        deployment=deployment,
        state=State.STOPPED,
        gpu_uuids=["a", "b"],
        started_at=start,
        stopped_at=start + dt.timedelta(hours=1),
    )
    Replica.objects.create(
        deployment=deployment,
        state=State.READY,
        gpu_uuids=["c"],
        started_at=start + dt.timedelta(minutes=30),
    )
    Replica.objects.create(deployment=deployment, state=State.READY, gpu_uuids=[], started_at=start)
    other = Deployment.objects.create(model=served_model(name="other"), replicas_wanted=0)
    Replica.objects.create(
        deployment=other,
        state=State.STOPPED,
        gpu_uuids=["d"],
        started_at=start - dt.timedelta(hours=5),
        stopped_at=start - dt.timedelta(hours=4),
    )
    # when the period 10:15-10:45 is asked for
    costs = serving_gpu_seconds(
        start=start + dt.timedelta(minutes=15), end=start + dt.timedelta(minutes=45)
    )
    # then 30 min × 2 GPUs + 15 min × 1 GPU; the other model held nothing in the period
    assert len(costs) == 1
    assert costs[0].model_name == model.name
    assert costs[0].gpu_seconds == 30 * 60 * 2 + 15 * 60
    assert costs[0].replica_seconds == 30 * 60 * 2 + 15 * 60
    assert serving_gpu_seconds(start=start, end=start) == []
