"""Home folder quotas, measured on the real Docker engine: warned near a profile's quota,
refused over it, and nothing created by a refused start."""

from __future__ import annotations

import uuid
from contextlib import closing

import docker
import pytest

from portal.core.exceptions import PermissionDenied
from sandboxes.launcher import services
from sandboxes.launcher.disk import home_quota_check, home_usage_measure
from sandboxes.launcher.models import HomeUsage, ResourceProfile, Sandbox

from .helpers import committed, funded_student, image, profile

MIB = 1024 * 1024
IMAGE = "nac/python-cpu:2026.11"


@pytest.fixture
def prefix(settings):
    # volumes of this test only: the machine's real home volumes are never measured or touched
    settings.SANDBOX_HOME_VOLUME_PREFIX = f"nac-test-{uuid.uuid4().hex[:8]}-"
    yield settings.SANDBOX_HOME_VOLUME_PREFIX
    with closing(docker.from_env()) as engine:
        for volume in engine.volumes.list(filters={"name": settings.SANDBOX_HOME_VOLUME_PREFIX}):
            volume.remove(force=True)


def fill_home(user, prefix: str, mib: int) -> None:
    """Write `mib` MiB into the person's home volume, as a notebook would."""
    with closing(docker.from_env()) as engine:
        engine.containers.run(
            IMAGE,
            ["sh", "-c", f"head -c {mib * MIB} /dev/urandom > /home/jovyan/data.bin"],
            user="0",
            volumes={f"{prefix}{user.hub_username}": {"bind": "/home/jovyan", "mode": "rw"}},
            network_mode="none",
            remove=True,
        )


def quotas(mib: int) -> None:
    ResourceProfile.objects.update(home_quota_mib=mib)


@pytest.mark.django_db
def test_a_home_near_the_quota_is_measured_and_its_owner_warned_once(
    prefix, mailoutbox, django_capture_on_commit_callbacks
):
    # given a student whose home holds 4 MiB, and profiles that allow 5 MiB (over 80% full)
    student = funded_student()
    fill_home(student, prefix, 4)
    image()  # the seeded catalogue
    quotas(5)

    # when the beat task measures the home volumes, twice
    with django_capture_on_commit_callbacks(execute=True):
        first = home_usage_measure()
    with django_capture_on_commit_callbacks(execute=True):
        second = home_usage_measure()

    # then the engine's size is recorded, and the owner was told once
    usage = HomeUsage.objects.get(user=student)
    assert 4 * MIB <= usage.bytes < 4 * MIB + 256 * 1024
    assert usage.volume == f"{prefix}{student.hub_username}"
    assert first == {"measured": 1, "warned": 1}
    assert second == {"measured": 1, "warned": 0}
    [mail] = mailoutbox
    assert mail.to == [student.email]
    assert "nearly full" in mail.subject


@pytest.mark.django_db
def test_a_start_over_the_quota_is_refused_and_creates_nothing(prefix, enqueued):
    # given a student whose measured home holds 4 MiB
    student = funded_student()
    fill_home(student, prefix, 4)
    image()
    quotas(10)
    home_usage_measure()

    # when the profile allows only 3 MiB
    ResourceProfile.objects.filter(slug="cpu-small").update(home_quota_mib=3)
    with pytest.raises(PermissionDenied) as refused:
        committed(
            services.sandbox_launch,
            user=student,
            image=image(),
            profile=profile("cpu-small"),
            name="",
        )

    # then the start is refused with the figures, and nothing was made
    assert "Your home folder holds 4.0\xa0MB, over the 3.0\xa0MB" in refused.value.message
    assert "delete your home folder" in refused.value.message
    assert not Sandbox.objects.filter(user=student).exists()
    assert enqueued == []


@pytest.mark.django_db
def test_near_the_quota_a_start_goes_ahead_with_a_warning(prefix, enqueued):
    student = funded_student()
    fill_home(student, prefix, 4)
    image()
    quotas(10)
    home_usage_measure()
    cpu = profile("cpu-small")

    # 4 of 10 MiB: nothing to say; 4 of 5 MiB: a warning, and the start is allowed
    assert home_quota_check(user=student, profile=cpu) == ""
    ResourceProfile.objects.filter(pk=cpu.pk).update(home_quota_mib=5)
    cpu.refresh_from_db()
    committed(services.sandbox_launch, user=student, image=image(), profile=cpu, name="")
    assert Sandbox.objects.filter(user=student).count() == 1
    assert "holds 4.0\xa0MB of the 5.0\xa0MB" in home_quota_check(user=student, profile=cpu)


@pytest.mark.django_db
def test_a_profile_without_a_quota_and_an_unmeasured_home_are_never_refused(prefix, enqueued):
    student = funded_student()
    image()
    quotas(0)
    assert home_quota_check(user=student, profile=profile("cpu-small")) == ""
    HomeUsage.objects.create(
        user=student, volume="x", bytes=1 << 40, measured_at="2026-01-01T00:00Z"
    )
    assert home_quota_check(user=student, profile=profile("cpu-small")) == ""
