"""One device is never held by a sandbox and a model replica at once: racing threads on real
PostgreSQL, and the database's own wall when the allocator is bypassed."""

import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction

from inference.deployments.models import Deployment, Replica
from sandboxes.gpus.backends import SimulatedBackend
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.gpus.services import gpu_allocate, gpu_release, inventory_sync
from sandboxes.launcher.models import Sandbox
from tests.sandboxes.launcher.helpers import funded_founder, image, profile

from .conftest import served_model

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks need PostgreSQL (CI runs it)"
)


def sandboxes(count: int) -> list[Sandbox]:
    boxes = []
    for n in range(count):
        founder = funded_founder()
        organisation = founder.memberships.first().organisation
        boxes.append(
            Sandbox.objects.create(
                user=founder,
                organisation=organisation,
                account=organisation.credit_account,
                image=image(),
                profile=profile("gpu-1"),
                server_name=f"sb-mixed{n:05d}",
                status=Sandbox.Status.QUEUED,
            )
        )
    return boxes


def replicas(count: int) -> list[Replica]:
    deployment = Deployment.objects.create(model=served_model(), replicas_wanted=count)
    return [Replica.objects.create(deployment=deployment) for _ in range(count)]


def race(claims: list[tuple[str, object, int]]) -> dict:
    """Each claim (kind, holder, GPUs) in its own thread and connection, all released at once
    by a barrier; returns holder key → UUIDs given."""
    barrier = threading.Barrier(len(claims))
    results, errors = {}, []

    def grab(kind, holder, count):
        try:
            barrier.wait()
            with transaction.atomic():
                results[(kind, holder.pk)] = gpu_allocate(**{kind: holder}, count=count)
        except Exception as exc:  # any error is a failure of the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=grab, args=claim) for claim in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("replica_gpus", [1, 2])
def test_sandboxes_and_replicas_racing_for_gpus_never_share_one(replica_gpus):
    # given 3 GPUs, 8 sandboxes wanting 1 each and 8 replicas wanting `replica_gpus` each
    inventory_sync(backend=SimulatedBackend("3xH100-80GB", host="race"))
    claims = [("sandbox", box, 1) for box in sandboxes(8)]
    claims += [("replica", rep, replica_gpus) for rep in replicas(8)]
    # when all ask at once
    results = race(claims)
    # then no device is given twice, every winner got all it asked for, and the database holds
    # exactly what the winners were told
    given = [uuid for uuids in results.values() for uuid in uuids]
    assert len(given) == len(set(given))
    assert 1 <= len(given) <= 3
    for (kind, _pk), uuids in results.items():
        assert len(uuids) in (0, 1 if kind == "sandbox" else replica_gpus)
    held = GpuAllocation.objects.filter(released_at__isnull=True)
    assert sorted(held.values_list("device__uuid", flat=True)) == sorted(given)
    for allocation in held:
        assert (allocation.sandbox_id is None) != (allocation.replica_id is None)


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_replica_on_a_device_a_sandbox_holds():
    # given a device held by a sandbox
    inventory_sync(backend=SimulatedBackend("1xH100-80GB", host="wall"))
    (box,) = sandboxes(1)
    (replica,) = replicas(1)
    with transaction.atomic():
        assert len(gpu_allocate(sandbox=box, count=1)) == 1
    device = GpuDevice.objects.get()
    # when code that skipped the allocator inserts a replica's allocation of it
    with pytest.raises(IntegrityError), transaction.atomic():
        GpuAllocation.objects.create(device=device, replica=replica)
    # then only the sandbox holds it; released, the replica may have it
    assert list(GpuAllocation.objects.values_list("sandbox_id", "replica_id")) == [(box.pk, None)]
    gpu_release(sandbox=box)
    with transaction.atomic():
        assert gpu_allocate(replica=replica, count=1) == [device.uuid]


@pytest.mark.django_db(transaction=True)
def test_an_allocation_has_exactly_one_holder():
    inventory_sync(backend=SimulatedBackend("1xH100-80GB", host="wall"))
    (box,) = sandboxes(1)
    (replica,) = replicas(1)
    device = GpuDevice.objects.get()
    for holders in ({"sandbox": box, "replica": replica}, {}):
        with pytest.raises(IntegrityError), transaction.atomic():
            GpuAllocation.objects.create(device=device, **holders)
    assert not GpuAllocation.objects.exists()
    with pytest.raises(TypeError):
        gpu_allocate(sandbox=box, replica=replica, count=1)
    with pytest.raises(TypeError):
        gpu_release()
