"""GPU inventory: the backends, the sync into the database, and allocation under races."""

import json
import threading
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections

from sandboxes.gpus.backends import (
    GpuBackendUnavailable,
    NvmlBackend,
    SimulatedBackend,
    backend_from_setting,
)
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.gpus.nvml_recording import RecordedNvml
from sandboxes.gpus.services import gpu_allocate, gpu_release, inventory_sync

FIXTURES = Path(__file__).parent / "fixtures"


def recording(name="composed-h100x2-mig.json") -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_simulated_backend_reads_its_spec_and_keeps_uuids_stable():
    first = SimulatedBackend("2xH100-80GB,1xL4-24GB", host="gpu-host-1").discover()
    again = SimulatedBackend("2xH100-80GB,1xL4-24GB", host="gpu-host-1").discover()
    elsewhere = SimulatedBackend("2xH100-80GB,1xL4-24GB", host="gpu-host-2").discover()
    assert [d.model for d in first] == ["NVIDIA H100 80GB HBM3"] * 2 + ["NVIDIA L4"]
    assert [d.index for d in first] == [0, 1, 2]
    assert [d.uuid for d in first] == [d.uuid for d in again]
    assert not {d.uuid for d in first} & {d.uuid for d in elsewhere}
    assert all(d.uuid.startswith("GPU-") for d in first)


@pytest.mark.parametrize(
    "setting", ["simulated:", "simulated:4xH100", "simulated:4xV100-16GB", "cuda"]
)
def test_a_bad_backend_setting_says_what_is_wrong(setting):
    with pytest.raises(ImproperlyConfigured, match="SANDBOX_GPU_BACKEND"):
        backend_from_setting(setting)


def test_nvml_backend_reads_gpus_and_mig_instances_by_uuid():
    nvml = RecordedNvml(recording())
    found = NvmlBackend(nvml=nvml).discover()
    assert nvml.initialised == 0  # shut down again
    whole, split, mig_a, mig_b = found
    assert whole.uuid == "GPU-5f3b1c2e-8a7d-4e21-9c0b-1d2e3f405162"
    assert (whole.model, whole.memory_mib, whole.mig_enabled) == (
        "NVIDIA H100 80GB HBM3",
        81559,
        False,
    )
    assert split.mig_enabled is True
    assert (mig_a.mig_parent_uuid, mig_a.mig_profile, mig_a.memory_mib) == (
        split.uuid,
        "1g.10gb",
        9984,
    )
    assert mig_b.uuid.startswith("MIG-")


def test_nvml_without_a_driver_is_reported_not_hidden():
    with pytest.raises(GpuBackendUnavailable, match="NVML could not start"):
        NvmlBackend(nvml=RecordedNvml(None)).discover()


def test_a_lost_gpu_is_unhealthy_and_never_allocated(db):
    data = recording()
    data["devices"][0]["lost"] = True
    inventory_sync(backend=NvmlBackend(nvml=RecordedNvml(data)))
    lost = GpuDevice.objects.get(uuid=data["devices"][0]["uuid"])
    assert lost.health == GpuDevice.Health.UNHEALTHY
    assert lost not in GpuDevice.objects.free()


@pytest.mark.django_db
def test_sync_adds_refreshes_and_marks_missing_devices():
    result = inventory_sync(backend=NvmlBackend(nvml=RecordedNvml(recording())))
    assert (result.added, result.missing, result.simulated) == (4, 0, False)
    mig = GpuDevice.objects.get(uuid="MIG-11111111-2222-4333-8444-555555555555")
    assert mig.mig_parent.uuid == "GPU-9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    # Allocatable: the whole GPU and both MIG instances, never the split parent.
    assert GpuDevice.objects.free().count() == 3

    smaller = recording()
    smaller["devices"] = smaller["devices"][:1]
    result = inventory_sync(backend=NvmlBackend(nvml=RecordedNvml(smaller)))
    assert (result.added, result.updated, result.missing) == (0, 1, 3)
    assert GpuDevice.objects.filter(health=GpuDevice.Health.MISSING).count() == 3
    assert GpuDevice.objects.count() == 4  # kept: allocations may point at them


@pytest.mark.django_db
def test_simulated_devices_are_marked_simulated():
    inventory_sync(backend=SimulatedBackend("2xA100-40GB", host="h"))
    assert set(GpuDevice.objects.values_list("simulated", flat=True)) == {True}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_racing_allocations_never_share_a_device():
    """16 threads, each with its own connection, grab one GPU at once from 3: exactly 3 win,
    each on a different device, and the losers hold nothing."""
    from sandboxes.launcher.models import Sandbox
    from tests.sandboxes.launcher.helpers import funded_founder, image, profile

    inventory_sync(backend=SimulatedBackend("3xH100-80GB", host="race"))
    boxes = []
    for n in range(16):
        founder = funded_founder()
        boxes.append(
            Sandbox.objects.create(
                user=founder,
                organisation=founder.memberships.first().organisation,
                account=founder.memberships.first().organisation.credit_account,
                image=image(),
                profile=profile("gpu-1"),
                server_name=f"sb-racer{n:05d}",
                status=Sandbox.Status.QUEUED,
            )
        )
    barrier = threading.Barrier(len(boxes))
    results, errors = {}, []

    def grab(box):
        from django.db import transaction

        try:
            barrier.wait()
            with transaction.atomic():
                results[box.pk] = gpu_allocate(sandbox=box, count=1)
        except Exception as exc:  # any error is a failure of the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=grab, args=(box,)) for box in boxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    winners = {pk: uuids for pk, uuids in results.items() if uuids}
    assert len(winners) == 3
    assert len({uuids[0] for uuids in winners.values()}) == 3
    assert GpuAllocation.objects.filter(released_at__isnull=True).count() == 3

    released = gpu_release(sandbox=Sandbox.objects.get(pk=next(iter(winners))))
    assert len(released) == 1
    assert gpu_release(sandbox=Sandbox.objects.get(pk=next(iter(winners)))) == []
