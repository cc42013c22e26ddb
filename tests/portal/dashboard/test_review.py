"""The review queue shows its service level: days waiting since submission, oldest first, the
rows past CREDITS_REVIEW_SLA_DAYS marked, and filters by state, sector and age."""

import datetime as dt
import re

import pytest
from django.urls import reverse

from portal.credits.models import CreditApplication
from tests.factories import OrganisationFactory

from .programme_helpers import NOW, at

pytestmark = pytest.mark.django_db


def _application(title, *, days_ago, state="submitted", sector="language"):
    organisation = OrganisationFactory()
    return CreditApplication.objects.create(
        organisation=organisation,
        created_by=organisation.created_by,
        title=title,
        summary="Train a model.",
        sector=sector,
        requested_gpu_hours=100,
        duration_months=3,
        data_sensitivity="public",
        state=state,
        submitted_at=NOW - dt.timedelta(days=days_ago),
        # the last move (review started) can be much later than the submission
        state_changed_at=NOW - dt.timedelta(hours=1),
    )


def _queue(client, **params):
    with at(NOW):
        return client.get(reverse("dashboard:applications"), params)


@pytest.fixture
def queue(programme_manager, client):
    client.force_login(programme_manager)
    return {
        "fresh": _application("Fresh", days_ago=1),
        "due": _application("Due", days_ago=3, state="in_review", sector="health"),
        "late": _application("Late", days_ago=4.5),
        "oldest": _application("Oldest", days_ago=12, state="in_review"),
    }


def test_days_waiting_oldest_first_with_those_past_the_service_level_marked(
    client, queue, settings
):
    settings.CREDITS_REVIEW_SLA_DAYS = 3
    response = _queue(client)
    rows = list(response.context["page"])
    assert [a.title for a in rows] == ["Oldest", "Late", "Due", "Fresh"]
    assert [a.days_waiting for a in rows] == [12, 4, 3, 1]
    assert [a.overdue for a in rows] == [True, True, False, False]
    page = response.content.decode()
    overdue_rows = re.findall(r'<tr class="overdue" data-application="([0-9a-f-]+)"', page)
    assert overdue_rows == [str(queue["oldest"].public_id), str(queue["late"].public_id)]
    assert "within 3 days of submission" in page
    assert "?min_days_waiting=3" in page


def test_the_service_level_defaults_to_five_days(client, queue):
    rows = list(_queue(client).context["page"])
    assert [a.title for a in rows if a.overdue] == ["Oldest"]


def test_age_counts_from_submission_not_from_the_last_move(client, queue):
    rows = list(_queue(client, min_days_waiting=3).context["page"])
    assert [a.title for a in rows] == ["Oldest", "Late", "Due"]


def test_filters_by_state_and_sector(client, queue):
    rows = list(_queue(client, state="in_review", sector="health").context["page"])
    assert [a.title for a in rows] == ["Due"]


def test_decided_applications_are_not_counted_as_waiting(client, queue):
    _application("Decided", days_ago=30, state="approved")
    (decided,) = _queue(client, state="approved").context["page"]
    assert (decided.title, decided.days_waiting, decided.overdue) == ("Decided", None, False)


def test_the_pages_keep_the_filters(client, programme_manager):
    client.force_login(programme_manager)
    for n in range(55):
        _application(f"Project {n}", days_ago=10 + n / 100)
    page = _queue(client, sector="language").content.decode()
    assert "?sector=language&amp;page=2" in page
