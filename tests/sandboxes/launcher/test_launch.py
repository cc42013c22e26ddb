"""Launching, queueing and stopping, on the portal's side (the hub is not involved here)."""

import pytest

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import services
from sandboxes.launcher.entitlement import SpawnRefused, spawn_spec
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.selectors import queue_position
from tests.factories import UserFactory

from .helpers import committed, funded_founder, funded_student, gpus, image, profile

pytestmark = pytest.mark.django_db
Status = Sandbox.Status


def nothing_created():
    return not Sandbox.objects.exists() and not GpuAllocation.objects.exists()


def test_a_cpu_launch_starts_at_once_and_enqueues_the_start(enqueued):
    student = funded_student()
    sandbox = committed(
        services.sandbox_launch, user=student, image=image(), profile=profile("cpu-small")
    )
    assert sandbox.status == Status.STARTING
    assert sandbox.account.user == student
    assert enqueued == [("sandbox_start", (sandbox.pk,), {})]
    assert AuditEvent.objects.filter(
        action="sandbox.launched", target_id=str(sandbox.public_id)
    ).exists()


def test_a_gpu_launch_allocates_a_free_device(enqueued):
    gpus(2)
    founder = funded_founder()
    sandbox = committed(
        services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
    )
    assert sandbox.status == Status.STARTING
    assert sandbox.organisation is not None
    held = GpuAllocation.objects.get(sandbox=sandbox, released_at__isnull=True)
    assert held.device.uuid.startswith("GPU-")


@pytest.mark.parametrize(
    ("hours", "slug", "message"),
    [
        (0.2, "cpu-small", "Not enough credits"),  # 0.2 h at 0.05/s runs 4 h: enough
        (0.2, "gpu-1", "Not enough credits"),  # 12 minutes of one GPU: too little
    ],
)
def test_a_launch_needs_the_minimum_runway(hours, slug, message, enqueued):
    gpus(2)
    student = funded_student(hours=hours)
    if slug == "cpu-small":
        sandbox = committed(
            services.sandbox_launch, user=student, image=image(), profile=profile(slug)
        )
        assert sandbox.status == Status.STARTING
        return
    with pytest.raises(ApplicationError, match=message):
        committed(services.sandbox_launch, user=student, image=image(), profile=profile(slug))
    assert nothing_created()
    assert enqueued == []


def test_a_student_may_not_use_a_startup_profile(enqueued):
    gpus(2)
    student = funded_student(hours=100)
    with pytest.raises(PermissionDenied, match="not available to startups"):
        committed(services.sandbox_launch, user=student, image=image(), profile=profile("gpu-2"))
    assert nothing_created()


def test_someone_not_onboarded_cannot_launch(enqueued):
    with pytest.raises(PermissionDenied, match="Finish onboarding"):
        committed(
            services.sandbox_launch, user=UserFactory(), image=image(), profile=profile("cpu-small")
        )
    assert nothing_created()


def test_an_image_that_is_withdrawn_cannot_be_launched(enqueued):
    student = funded_student()
    withdrawn = image()
    withdrawn.is_active = False
    withdrawn.save()
    with pytest.raises(ApplicationError, match="not offered"):
        committed(
            services.sandbox_launch, user=student, image=withdrawn, profile=profile("cpu-small")
        )
    assert nothing_created()


def test_a_second_launch_while_one_is_starting_is_refused(enqueued):
    student = funded_student()
    first = committed(
        services.sandbox_launch, user=student, image=image(), profile=profile("cpu-small")
    )
    with pytest.raises(ApplicationError, match="already starting"):
        committed(
            services.sandbox_launch, user=student, image=image(), profile=profile("cpu-small")
        )
    assert list(Sandbox.objects.all()) == [first]


def test_the_database_refuses_two_launches_at_a_time_even_past_the_check(enqueued):
    from django.db import IntegrityError, transaction

    student = funded_student()
    first = committed(
        services.sandbox_launch, user=student, image=image(), profile=profile("cpu-small")
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Sandbox.objects.create(
            user=student,
            account=first.account,
            image=first.image,
            profile=first.profile,
            server_name="sb-abcdefghij",
            status=Status.STARTING,
        )


def test_with_no_free_gpu_launches_queue_in_order_and_the_first_starts_on_release(enqueued):
    gpus(2)
    people = [funded_founder() for _ in range(5)]
    boxes = [
        committed(services.sandbox_launch, user=person, image=image(), profile=profile("gpu-1"))
        for person in people
    ]
    assert [b.status for b in boxes] == [Status.STARTING] * 2 + [Status.QUEUED] * 3
    assert [queue_position(b) for b in boxes[2:]] == [1, 2, 3]
    held = set(
        GpuAllocation.objects.filter(released_at__isnull=True).values_list("device", flat=True)
    )
    assert len(held) == 2  # two different devices

    # The first one stops: its GPU goes to the first in line, not to a later one.
    committed(services.sandbox_mark_stopped, sandbox_id=boxes[0].pk, reason="test")
    for box in boxes:
        box.refresh_from_db()
    assert boxes[0].status == Status.STOPPED
    assert boxes[2].status == Status.STARTING
    assert [b.status for b in boxes[3:]] == [Status.QUEUED, Status.QUEUED]
    assert [queue_position(b) for b in boxes[3:]] == [1, 2]
    assert ("sandbox_start", (boxes[2].pk,), {}) in enqueued
    assert not GpuAllocation.objects.filter(sandbox=boxes[0], released_at__isnull=True).exists()


def test_an_organisation_over_its_gpu_cap_waits_without_blocking_others(settings, enqueued):
    settings.SANDBOX_MAX_GPUS_PER_HOLDER = 1
    gpus(2)
    founder = funded_founder()
    colleague = funded_founder(organisation=founder.memberships.first().organisation)
    outsider = funded_founder()
    first = committed(
        services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1")
    )
    second = committed(
        services.sandbox_launch, user=colleague, image=image(), profile=profile("gpu-1")
    )
    third = committed(
        services.sandbox_launch, user=outsider, image=image(), profile=profile("gpu-1")
    )
    assert (first.status, second.status) == (Status.STARTING, Status.QUEUED)
    assert "maximum of 1 GPUs" in second.status_message
    # A GPU is still free, but only for someone under the cap: the outsider gets it... unless a
    # queue exists ahead of them for the same kind of GPU. Advance the queue as a release would.
    committed(services.queue_advance)
    third.refresh_from_db()
    second.refresh_from_db()
    assert second.status == Status.QUEUED
    assert third.status == Status.STARTING


def test_leaving_the_queue_needs_no_hub(enqueued):
    gpus(1)
    holder, waiter = funded_founder(), funded_founder()
    committed(services.sandbox_launch, user=holder, image=image(), profile=profile("gpu-1"))
    queued = committed(
        services.sandbox_launch, user=waiter, image=image(), profile=profile("gpu-1")
    )
    committed(services.sandbox_stop, sandbox=queued, acting_user=waiter)
    queued.refresh_from_db()
    assert queued.status == Status.STOPPED
    assert [call for call in enqueued if call[0] == "sandbox_stop"] == []


def test_stop_of_a_running_sandbox_goes_through_the_hub_and_keeps_gpus_until_gone(enqueued):
    gpus(1)
    founder = funded_founder()
    box = committed(services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1"))
    committed(services.sandbox_mark_running, sandbox_id=box.pk)
    committed(services.sandbox_stop, sandbox=box, acting_user=founder)
    box.refresh_from_db()
    assert box.status == Status.STOPPING
    assert ("sandbox_stop", (box.pk,), {"reason": ""}) in enqueued
    assert GpuAllocation.objects.filter(sandbox=box, released_at__isnull=True).count() == 1
    committed(services.sandbox_mark_stopped, sandbox_id=box.pk, reason="gone")
    assert not GpuAllocation.objects.filter(sandbox=box, released_at__isnull=True).exists()
    # Idempotent: a second report changes nothing.
    assert committed(services.sandbox_mark_stopped, sandbox_id=box.pk, reason="again") is False


def test_restart_after_stop_allocates_again_and_delete_keeps_the_home_unless_asked(enqueued):
    gpus(1)
    founder = funded_founder()
    box = committed(services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1"))
    committed(services.sandbox_mark_running, sandbox_id=box.pk)
    committed(services.sandbox_mark_stopped, sandbox_id=box.pk, reason="stopped")
    box = committed(services.sandbox_restart, sandbox=box, acting_user=founder)
    assert box.status == Status.STARTING
    assert GpuAllocation.objects.filter(sandbox=box, released_at__isnull=True).count() == 1
    with pytest.raises(ApplicationError, match="Stop the sandbox"):
        committed(services.sandbox_delete, sandbox=box, acting_user=founder)
    committed(services.sandbox_mark_failed, sandbox_id=box.pk, message="boom")
    committed(services.sandbox_delete, sandbox=box, acting_user=founder)
    assert not Sandbox.objects.for_user(founder).exists()


def test_spawn_spec_only_for_a_start_the_portal_asked_for(enqueued):
    gpus(1)
    founder = funded_founder()
    box = committed(services.sandbox_launch, user=founder, image=image(), profile=profile("gpu-1"))
    spec = spawn_spec(hub_username=founder.hub_username, server_name=box.server_name)
    assert spec["image"] == "nac/python-cpu:2026.11"
    assert spec["gpu_uuids"] == []  # simulated: no device for Docker to pass
    held = GpuAllocation.objects.get(sandbox=box).device.uuid
    assert spec["environment"]["NAC_SIMULATED_GPUS"] == held
    assert spec["volume"] == f"nac-home-{founder.hub_username}"
    assert spec["mem_limit_bytes"] == 65536 * 1024 * 1024
    assert spec["egress"] == "open"
    with pytest.raises(SpawnRefused, match="not launched from the portal"):
        spawn_spec(hub_username=founder.hub_username, server_name="sb-0000000000")
    committed(services.sandbox_mark_running, sandbox_id=box.pk)
    with pytest.raises(SpawnRefused, match="not authorised"):
        spawn_spec(hub_username=founder.hub_username, server_name=box.server_name)


def test_spawn_spec_passes_real_gpu_uuids_to_docker(enqueued):
    from sandboxes.gpus.models import GpuDevice

    gpus(1)
    GpuDevice.objects.update(simulated=False)  # as NVML would have reported it
    founder = funded_founder()
    gpu_image = image("pytorch-gpu")
    box = committed(
        services.sandbox_launch, user=founder, image=gpu_image, profile=profile("gpu-1")
    )
    spec = spawn_spec(hub_username=founder.hub_username, server_name=box.server_name)
    assert spec["gpu_uuids"] == [GpuDevice.objects.get().uuid]
    assert "NAC_SIMULATED_GPUS" not in spec["environment"]


def test_a_cpu_image_is_refused_for_real_gpus(enqueued):
    from sandboxes.gpus.models import GpuDevice

    gpus(1)
    GpuDevice.objects.update(simulated=False)
    with pytest.raises(ApplicationError, match="cannot use GPUs"):
        committed(
            services.sandbox_launch, user=funded_founder(), image=image(), profile=profile("gpu-1")
        )
    assert nothing_created()


def test_a_student_over_their_gpu_cap_is_told_in_their_own_words(settings, enqueued):
    settings.SANDBOX_MAX_GPUS_PER_HOLDER = 1
    gpus(2)
    student = funded_student(hours=20)
    first = committed(
        services.sandbox_launch, user=student, image=image(), profile=profile("gpu-1")
    )
    committed(services.sandbox_mark_running, sandbox_id=first.pk)
    second = committed(
        services.sandbox_launch, user=student, image=image(), profile=profile("gpu-1")
    )
    assert second.status == Status.QUEUED
    assert second.status_message == "Waiting: you already hold your maximum of 1 GPUs."
