"""The sandbox lifecycle cannot be gamed: starts that keep failing are paused, a sandbox stops
at its profile's maximum age, and a restart re-checks who may run on the organisation."""

import datetime as dt

import pytest
import time_machine
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.organisations.models import Membership, Organisation
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import services, tasks
from sandboxes.launcher.models import Sandbox, SandboxStart
from sandboxes.metering.models import SandboxRun

from .helpers import committed, funded_founder, funded_student, gpus, image, profile

pytestmark = pytest.mark.django_db
Status = Sandbox.Status
T0 = (timezone.now() + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


def at(minutes: float):
    return time_machine.travel(T0 + dt.timedelta(minutes=minutes), tick=False)


def launch(user, slug="cpu-small"):
    return committed(services.sandbox_launch, user=user, image=image(), profile=profile(slug))


def state():
    """Everything a refused launch or restart must leave as it was."""
    return (
        list(Sandbox.objects.order_by("pk").values_list("pk", "status")),
        GpuAllocation.objects.filter(released_at__isnull=True).count(),
        SandboxStart.objects.count(),
        SandboxRun.objects.count(),
    )


# --- Failed starts ---------------------------------------------------------------------------


def test_five_failed_starts_in_fifteen_minutes_pause_launches_and_restarts(enqueued):
    # given a student whose five starts failed, one a minute
    assert (
        settings.SANDBOX_FAILED_STARTS_LIMIT,
        settings.SANDBOX_FAILED_STARTS_WINDOW_SECONDS,
    ) == (
        5,
        900,
    )
    student = funded_student(hours=100)
    failed = []
    for minute in range(5):
        with at(minute):
            sandbox = launch(student)
            committed(services.sandbox_mark_failed, sandbox_id=sandbox.pk, message="boom")
            failed.append(sandbox)
    before = state()

    # when they launch again one minute after the last failure
    with at(5), pytest.raises(ApplicationError) as refused:
        launch(student)

    # then it is refused, saying when they may try again (the first failure leaves the window at
    # 15 minutes), and nothing was made
    assert refused.value.code == "rate_limited"
    expected = timezone.localtime(T0 + dt.timedelta(minutes=15)).strftime("%H:%M")
    assert f"try again at {expected} (in 10 minutes)" in refused.value.message
    assert state() == before

    # and a restart of a failed sandbox is refused the same way
    with at(6), pytest.raises(ApplicationError, match="in 9 minutes"):
        committed(services.sandbox_restart, sandbox=failed[0], acting_user=student)
    assert state() == before

    # and once the first failure is 15 minutes old, they may launch again
    with at(15.1):
        sandbox = launch(student)
    assert sandbox.status == Status.STARTING


def test_failed_starts_are_counted_per_person_and_stops_do_not_count(enqueued):
    # given one student with five failed starts, another with five stopped ones
    unlucky, careful = funded_student(hours=100), funded_student(hours=100)
    with at(0):
        for _ in range(5):
            sandbox = launch(unlucky)
            committed(services.sandbox_mark_failed, sandbox_id=sandbox.pk, message="boom")
            sandbox = launch(careful)
            committed(services.sandbox_stop, sandbox=sandbox, acting_user=careful)
            committed(services.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="stopped")

    # when both launch again
    with at(1):
        with pytest.raises(ApplicationError, match="launches are paused"):
            launch(unlucky)
        launched = launch(careful)

    # then only the one whose starts failed is paused
    assert launched.status == Status.STARTING


def test_the_api_answers_a_paused_launch_with_429(enqueued):
    from portal.apikeys.scopes import ALL_SCOPES, PROGRAMME_SCOPES
    from tests.portal.api.conftest import key_client, make_key

    # given a student whose five starts failed
    student = funded_student(hours=100)
    with at(0):
        for _ in range(5):
            sandbox = launch(student)
            committed(services.sandbox_mark_failed, sandbox_id=sandbox.pk, message="boom")
    before = state()
    _key, full = make_key(user=student, scopes=sorted(ALL_SCOPES - PROGRAMME_SCOPES))

    # when they launch through the API
    with at(1):
        response = key_client(full).post(
            "/api/v1/sandboxes", {"image": "python-cpu", "profile": "cpu-small"}, format="json"
        )

    # then it is a 429 that says when to try again, and nothing was made
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert "in 14 minutes" in response.json()["error"]["message"]
    assert state() == before


def test_the_failed_start_limit_is_a_setting(settings, enqueued):
    # given a limit of two failures
    settings.SANDBOX_FAILED_STARTS_LIMIT = 2
    student = funded_student(hours=100)
    with at(0):
        for _ in range(2):
            sandbox = launch(student)
            committed(services.sandbox_mark_failed, sandbox_id=sandbox.pk, message="boom")
        # when a third launch comes, then it is refused
        with pytest.raises(ApplicationError, match="2 starts of your sandboxes failed"):
            launch(student)


# --- Maximum age -----------------------------------------------------------------------------


def test_a_sandbox_past_its_profiles_maximum_age_is_stopped_and_told_why(enqueued):
    # given a one-GPU profile limited to an hour, and a sandbox of it running since T0
    gpus(2)
    limited = profile("gpu-1")
    limited.max_age_seconds = 3600
    limited.save()
    founder = funded_founder(hours=100)
    with at(0):
        sandbox = launch(founder, "gpu-1")
        committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
        unlimited = launch(funded_student(hours=100), "cpu-small")  # no maximum age

    # when the beat task runs before the hour is over, nothing happens
    with at(59):
        assert committed(tasks.sandboxes_stop_over_age_task) == []
    sandbox.refresh_from_db()
    assert sandbox.status == Status.RUNNING
    assert not AuditEvent.objects.filter(action="sandbox.max_age_reached").exists()

    # when it runs after the hour
    with at(61):
        stopped = committed(tasks.sandboxes_stop_over_age_task)

    # then the sandbox is stopped through the hub, its home kept, the person told why, audited
    assert stopped == [str(sandbox.public_id)]
    sandbox.refresh_from_db()
    assert sandbox.status == Status.STOPPING
    assert "maximum age of its profile (1 hour)" in sandbox.status_message
    assert "Your files are kept" in sandbox.status_message
    stops = [call for call in enqueued if call[0] == "sandbox_stop"]
    reason = {"code": "max_age", "params": {"max_age_seconds": 3600}}
    assert stops == [("sandbox_stop", (sandbox.pk,), {"reason": reason})]
    assert not [call for call in enqueued if call[0] == "home_volume_delete"]
    audit = AuditEvent.objects.get(action="sandbox.max_age_reached")
    assert audit.target_id == str(sandbox.public_id)
    assert audit.data["max_age_seconds"] == 3600
    # and the sandbox of a profile without a maximum age runs on
    unlimited.refresh_from_db()
    assert unlimited.status == Status.STARTING

    # and when the hub reports it gone, the stop message stays what the person reads
    committed(services.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason=stops[0][2]["reason"])
    sandbox.refresh_from_db()
    assert sandbox.status == Status.STOPPED
    assert "maximum age" in sandbox.status_message


def test_the_launch_page_says_when_a_profiles_sandboxes_stop(client):
    limited = profile("cpu-small")
    limited.max_age_seconds = 2 * 3600
    limited.save()
    client.force_login(funded_student(hours=10))
    page = client.get(reverse("launcher:list")).content.decode()
    assert "stops after 2 hours" in page


def test_the_maximum_age_task_is_on_the_beat_schedule():
    from portal.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["launcher-stop-over-age"]
    assert entry["task"] == "launcher.sandboxes_stop_over_age"
    assert entry["task"] in app.tasks
    assert entry["schedule"] == settings.SANDBOX_MAX_AGE_CHECK_INTERVAL


# --- Restart re-checks the organisation ------------------------------------------------------


def _stopped_sandbox_of(founder) -> Sandbox:
    sandbox = launch(founder, "gpu-1")
    committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
    committed(services.sandbox_mark_stopped, sandbox_id=sandbox.pk, reason="stopped")
    sandbox.refresh_from_db()
    return sandbox


def test_a_suspended_organisations_stopped_sandbox_cannot_be_restarted(enqueued):
    # given a founder's stopped sandbox, and then their organisation suspended
    gpus(1)
    founder = funded_founder(hours=100)
    sandbox = _stopped_sandbox_of(founder)
    Organisation.objects.filter(pk=sandbox.organisation_id).update(is_active=False)
    before = state()

    # when the founder starts it again
    with pytest.raises(PermissionDenied, match="suspended"):
        committed(services.sandbox_restart, sandbox=sandbox, acting_user=founder)

    # then nothing starts, nothing is allocated, nothing is charged
    assert state() == before
    assert [call for call in enqueued if call[0] == "sandbox_start"] == [
        ("sandbox_start", (sandbox.pk,), {})  # the first start only
    ]


def test_someone_removed_from_the_organisation_cannot_restart_its_sandbox(enqueued):
    # given a colleague's stopped sandbox on the organisation, and then the colleague removed
    gpus(1)
    owner = funded_founder(hours=100)
    organisation = owner.memberships.first().organisation
    colleague = funded_founder(organisation=organisation)
    sandbox = _stopped_sandbox_of(colleague)
    Membership.objects.filter(user=colleague, organisation=organisation).delete()
    before = state()

    # when they start it again, then it is refused and nothing changed
    with pytest.raises(PermissionDenied, match="not a member"):
        committed(services.sandbox_restart, sandbox=sandbox, acting_user=colleague)
    assert state() == before
