"""The sandboxes page: the picker, launch refusals shown in the form, stop/start/delete."""

import re

import pytest
from django.test import TestCase
from django.urls import reverse

from sandboxes.launcher.models import Sandbox

from .helpers import funded_student, gpus

pytestmark = pytest.mark.django_db


def test_the_page_shows_runway_and_says_gpus_are_simulated(client):
    gpus(2)
    client.force_login(funded_student(hours=10))
    page = client.get(reverse("launcher:list")).content.decode()
    assert 'id="simulated-notice"' in page
    assert "10 h 0 min" in page  # one GPU for 10 GPU-hours
    assert "2 free" in page
    # a newcomer can press Launch at once: the first image and the smallest profile are chosen
    assert re.search(r'<input[^>]*value="python-cpu"[^>]*checked', page)
    assert re.search(r'<input[^>]*value="cpu-small"[^>]*checked', page)


def test_a_refused_launch_is_shown_in_the_form_and_leaves_nothing(client, enqueued):
    gpus(2)
    client.force_login(funded_student(hours=0.2))
    response = client.post(reverse("launcher:list"), {"image": "python-cpu", "profile": "gpu-1"})
    assert response.status_code == 400
    assert "Not enough credits" in response.content.decode()
    assert not Sandbox.objects.exists()


def test_launch_stop_start_and_delete_from_the_page(client, enqueued):
    student = funded_student()
    client.force_login(student)
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            reverse("launcher:list"), {"image": "python-cpu", "profile": "cpu-small"}
        )
    assert response.status_code == 302
    sandbox = Sandbox.objects.get()
    assert sandbox.status == "starting"
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post(reverse("launcher:stop", args=[sandbox.public_id]))
    sandbox.refresh_from_db()
    assert sandbox.status == "stopping"
    Sandbox.objects.update(status="stopped")
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post(reverse("launcher:start", args=[sandbox.public_id]))
    sandbox.refresh_from_db()
    assert sandbox.status == "starting"
    Sandbox.objects.update(status="stopped")
    refused = client.post(
        reverse("launcher:delete", args=[sandbox.public_id]), {"delete_home": "on", "confirm": "x"}
    )
    assert refused.status_code == 400
    assert Sandbox.objects.get().deleted_at is None
    client.post(reverse("launcher:delete", args=[sandbox.public_id]), {})
    assert Sandbox.objects.get().deleted_at is not None


def test_someone_elses_sandbox_is_a_404(client, enqueued):
    owner = funded_student()
    client.force_login(owner)
    client.post(reverse("launcher:list"), {"image": "python-cpu", "profile": "cpu-small"})
    sandbox = Sandbox.objects.get()
    client.force_login(funded_student())
    assert client.post(reverse("launcher:stop", args=[sandbox.public_id])).status_code == 404
    assert client.get(reverse("launcher:delete", args=[sandbox.public_id])).status_code == 404


def test_deleting_with_the_home_folder_removes_the_docker_volume(client, enqueued):
    import docker

    from sandboxes.launcher.selectors import home_volume

    student = funded_student()
    engine = docker.from_env()
    engine.volumes.create(home_volume(student))
    client.force_login(student)
    client.post(reverse("launcher:list"), {"image": "python-cpu", "profile": "cpu-small"})
    sandbox = Sandbox.objects.get()
    Sandbox.objects.update(status="stopped")
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            reverse("launcher:delete", args=[sandbox.public_id]),
            {"delete_home": "on", "confirm": "DELETE"},
        )
    assert response.status_code == 302
    names = [volume.name for volume in engine.volumes.list()]
    engine.close()
    assert home_volume(student) not in names
