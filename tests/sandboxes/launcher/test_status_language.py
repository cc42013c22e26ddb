"""Status messages in the reader's language: a sandbox's message is stored as a code with its
parameters (and an English rendering) by whoever changed it, a Celery worker that speaks
English or a programme manager who speaks Urdu, and put into words when its owner reads it."""

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from sandboxes.launcher import services, tasks
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.status_messages import MESSAGES, StatusNote, note, status_render

from .helpers import committed, funded_student, image, profile
from .test_api import API, client_for

pytestmark = pytest.mark.django_db

# What each message's parameters look like when a writer stores it.
PARAMS = {
    "queued_over_cap": {"organisation": "", "cap": 2},
    "queued_over_own_cap": {"cap": 2},
    "hub_refused": {"e": "HTTP 500"},
    "max_age": {"max_age_seconds": 3600},
    "left_organisation": {"organisation": "Indus Speech"},
}


class FakeHub:
    """A hub that stops every server at once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def server_stop(self, user, server, remove=False):
        return True


def stopped_by_the_worker(monkeypatch, owner) -> Sandbox:
    """The owner's sandbox, started and then stopped by Celery tasks, which speak English."""
    monkeypatch.setattr(tasks, "hub_client", FakeHub)
    with translation.override("en"):
        sandbox = committed(
            services.sandbox_launch, user=owner, image=image(), profile=profile("cpu-small")
        )
        committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
        committed(services.sandbox_stop, sandbox=sandbox, acting_user=owner)
        assert tasks.sandbox_stop_task(sandbox.pk) == "stopped"
    sandbox.refresh_from_db()
    return sandbox


def test_the_worker_stores_a_code_and_keeps_the_english_words(monkeypatch, enqueued):
    sandbox = stopped_by_the_worker(monkeypatch, funded_student())
    assert sandbox.status == Sandbox.Status.STOPPED
    assert (sandbox.status_code, sandbox.status_params) == ("stopped", {})
    assert sandbox.status_message == "Stopped."


def test_an_urdu_owner_reads_the_workers_message_in_urdu_on_the_list_page(
    client, monkeypatch, enqueued
):
    owner = funded_student()
    stopped_by_the_worker(monkeypatch, owner)
    client.force_login(owner)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ur"

    page = client.get(reverse("launcher:list")).content.decode()

    assert "رک گیا۔" in page
    assert "Stopped." not in page


def test_the_api_answers_the_workers_message_in_the_requests_language(monkeypatch, enqueued):
    owner = funded_student()
    sandbox = stopped_by_the_worker(monkeypatch, owner)
    api = client_for(owner)
    url = f"{API}/sandboxes/{sandbox.public_id}"

    assert api.get(url, HTTP_ACCEPT_LANGUAGE="ur").json()["message"] == "رک گیا۔"
    assert api.get(url, HTTP_ACCEPT_LANGUAGE="en").json()["message"] == "Stopped."


def test_a_running_sandbox_reads_ready_in_urdu(enqueued):
    owner = funded_student()
    with translation.override("en"):
        sandbox = committed(
            services.sandbox_launch, user=owner, image=image(), profile=profile("cpu-small")
        )
        committed(services.sandbox_mark_running, sandbox_id=sandbox.pk)
    sandbox.refresh_from_db()
    assert sandbox.status_message == "Ready."
    with translation.override("ur"):
        assert sandbox.status_text == "تیار۔"


def test_a_programme_managers_urdu_stop_is_stored_in_english_and_read_in_each_language(enqueued):
    owner = funded_student()
    sandbox = committed(
        services.sandbox_launch, user=owner, image=image(), profile=profile("cpu-small")
    )
    with translation.override("ur"):
        committed(
            services.sandbox_stop,
            sandbox=sandbox,
            acting_user=None,
            reason=note("max_age", max_age_seconds=2 * 3600),
        )
    sandbox.refresh_from_db()
    assert "maximum age of its profile (2 hours)" in sandbox.status_message
    with translation.override("en"):
        assert sandbox.status_text == sandbox.status_message
    with translation.override("ur"):
        assert "maximum age" not in sandbox.status_text
        assert "2" in sandbox.status_text


@pytest.mark.parametrize("code", sorted(MESSAGES))
def test_every_status_message_has_urdu_words(code):
    with translation.override("en"):
        english = status_render(code, PARAMS.get(code, {}))
    with translation.override("ur"):
        urdu = status_render(code, PARAMS.get(code, {}))
    assert english
    assert urdu
    assert urdu != english


def test_the_hubs_own_words_and_an_unknown_code_fall_back_to_the_stored_text():
    hub_words = Sandbox(status_message="Pulling the image", status_code="")
    forgotten = Sandbox(status_message="Gone.", status_code="no_longer_a_code")
    with translation.override("ur"):
        assert hub_words.status_text == "Pulling the image"
        assert forgotten.status_text == "Gone."
    assert StatusNote.from_value("Pulling the image") == StatusNote(text="Pulling the image")
    assert StatusNote.from_value(note("stopped").as_value()) == note("stopped")
    with pytest.raises(ValueError, match="no sandbox status message"):
        note("no_such_code")
