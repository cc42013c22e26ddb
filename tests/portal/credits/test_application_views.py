"""The application journey over HTTP: a founder applies, a programme manager decides, the
founder sees the credits and the statement. Refusals are clear and change nothing."""

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.credits.models import (
    ApplicationState,
    CreditAccount,
    CreditApplication,
    CreditGrant,
    LedgerEntry,
)
from portal.organisations.models import Role
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db
APPLICATION = {
    "title": "Urdu speech recognition",
    "summary": "Fine-tune a Whisper model on 2,000 hours of public Urdu radio.",
    "sector": "language",
    "requested_gpu_hours": 500,
    "gpu_class": "h100",
    "duration_months": 3,
    "data_sensitivity": "public",
}


def _apply(client, organisation, **overrides):
    return client.post(
        reverse("credits:application_new", args=[organisation.slug]), {**APPLICATION, **overrides}
    )


def _review_action(client, application, action, data=None):
    return client.post(
        reverse("dashboard:application_review_action", args=[application.public_id, action]),
        data or {},
    )


@pytest.fixture
def submitted(client, organisation, owner):
    client.force_login(owner)
    _apply(client, organisation)
    application = CreditApplication.objects.get()
    client.post(
        reverse(
            "credits:application_action",
            args=[organisation.slug, application.public_id, "submit"],
        )
    )
    client.logout()
    application.refresh_from_db()
    return application


def test_founder_applies_and_submits(client, organisation, owner):
    client.force_login(owner)
    response = _apply(client, organisation, team_members=[owner.pk])
    application = CreditApplication.objects.get()
    assert response["Location"].endswith(f"/applications/{application.public_id}/")
    assert application.state == ApplicationState.DRAFT
    assert list(application.team_members.all()) == [owner]
    client.post(
        reverse(
            "credits:application_action", args=[organisation.slug, application.public_id, "submit"]
        )
    )
    application.refresh_from_db()
    assert application.state == ApplicationState.SUBMITTED
    assert application.submitted_at is not None
    assert [(e.from_state, e.to_state) for e in application.events.all()] == [
        ("draft", "submitted")
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requested_gpu_hours", 0),
        ("requested_gpu_hours", -5),
        ("requested_gpu_hours", "lots"),
        ("duration_months", 0),
        ("data_sensitivity", "secret"),
        ("title", ""),
    ],
)
def test_bad_application_input_is_refused(client, organisation, owner, field, value):
    client.force_login(owner)
    response = _apply(client, organisation, **{field: value})
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert not CreditApplication.objects.exists()


def test_a_plain_member_cannot_apply(client, organisation, owner, member):
    client.force_login(member)
    response = _apply(client, organisation)
    assert response.status_code == 302
    assert not CreditApplication.objects.exists()


def test_another_organisations_application_is_not_found(client, submitted):
    outsider = MembershipFactory(role=Role.OWNER)
    client.force_login(outsider.user)
    url = reverse("credits:application", args=[submitted.organisation.slug, submitted.public_id])
    assert client.get(url).status_code == 404


def test_programme_manager_approves_partially_and_the_founder_sees_it(
    client, submitted, owner, programme_manager, django_capture_on_commit_callbacks
):
    client.force_login(programme_manager)
    queue = client.get(reverse("dashboard:applications"))
    assert submitted.title in queue.content.decode()
    expires = timezone.localdate() + dt.timedelta(days=90)
    with django_capture_on_commit_callbacks(execute=True):
        response = _review_action(
            client,
            submitted,
            "approve",
            {
                "gpu_hours": 300,
                "expires_on": expires.isoformat(),
                "rate_pkr_per_gpu_hour": "640.00",
            },
        )
    assert response.status_code == 302
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.PARTIALLY_APPROVED
    grant = CreditGrant.objects.get(application=submitted)
    assert (grant.amount, grant.remaining) == (300 * 3600, 300 * 3600)
    assert str(grant.rate_pkr_per_gpu_hour) == "640.00"
    assert CreditAccount.objects.get(organisation=submitted.organisation).balance == 300 * 3600
    assert AuditEvent.objects.filter(action="application.approved").exists()
    assert [m.to for m in mail.outbox] == [[owner.email]]
    assert "partially approved" in mail.outbox[0].subject
    # then the founder sees the balance and the statement
    client.force_login(owner)
    credits_page = client.get(reverse("credits:organisation", args=[submitted.organisation.slug]))
    assert "300.00" in credits_page.content.decode()
    account = CreditAccount.objects.get(organisation=submitted.organisation)
    month = timezone.localdate().strftime("%Y-%m")
    page = client.get(reverse("credits:statement", args=[account.public_id, month]))
    assert page.context["statement"].closing == 300 * 3600
    assert page.context["statement"].closing_pkr == 300 * 640
    csv_text = client.get(reverse("credits:statement_csv", args=[account.public_id, month]))
    assert "closing,,,,,,300.00,1080000,192000.00" in csv_text.content.decode()


@pytest.mark.parametrize(
    "data",
    [
        {"gpu_hours": 0, "expires_on": "2099-01-01", "rate_pkr_per_gpu_hour": "100"},
        {"gpu_hours": 10, "expires_on": "2001-01-01", "rate_pkr_per_gpu_hour": "100"},
        {"gpu_hours": 10, "expires_on": "2099-01-01", "rate_pkr_per_gpu_hour": "-1"},
        {"gpu_hours": "", "expires_on": "2099-01-01", "rate_pkr_per_gpu_hour": "100"},
    ],
)
def test_bad_approvals_write_nothing(client, submitted, programme_manager, data):
    client.force_login(programme_manager)
    response = _review_action(client, submitted, "approve", data)
    assert response.status_code == 400
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.SUBMITTED
    assert not CreditGrant.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_a_withdrawn_application_cannot_be_approved(client, submitted, owner, programme_manager):
    client.force_login(owner)
    client.post(
        reverse(
            "credits:application_action",
            args=[submitted.organisation.slug, submitted.public_id, "withdraw"],
        )
    )
    client.force_login(programme_manager)
    response = _review_action(
        client,
        submitted,
        "approve",
        {"gpu_hours": 10, "expires_on": "2099-01-01", "rate_pkr_per_gpu_hour": "100"},
    )
    assert response.status_code == 302  # back to the page, with the reason as a message
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.WITHDRAWN
    assert not CreditGrant.objects.exists()


def test_a_programme_manager_of_the_applying_organisation_cannot_decide(
    client, submitted, programme_manager
):
    MembershipFactory(organisation=submitted.organisation, user=programme_manager)
    client.force_login(programme_manager)
    response = _review_action(
        client,
        submitted,
        "approve",
        {"gpu_hours": 10, "expires_on": "2099-01-01", "rate_pkr_per_gpu_hour": "100"},
    )
    assert response.status_code == 302
    messages = [str(m) for m in client.get(response["Location"]).context["messages"]]
    assert any("another programme manager must decide" in m for m in messages)
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.SUBMITTED
    assert not CreditGrant.objects.exists()


def test_changes_requested_then_resubmitted(
    client, submitted, owner, programme_manager, django_capture_on_commit_callbacks
):
    client.force_login(programme_manager)
    assert _review_action(client, submitted, "changes", {"message": ""}).status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        _review_action(client, submitted, "changes", {"message": "Say which dataset licence."})
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.CHANGES_REQUESTED
    assert "Say which dataset licence." in mail.outbox[-1].body
    client.force_login(owner)
    url = reverse("credits:application", args=[submitted.organisation.slug, submitted.public_id])
    client.post(url, {**APPLICATION, "summary": "Radio archive, CC-BY licence."})
    client.post(
        reverse(
            "credits:application_action",
            args=[submitted.organisation.slug, submitted.public_id, "submit"],
        )
    )
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.SUBMITTED
    assert submitted.summary == "Radio archive, CC-BY licence."


def test_reject_needs_a_reason(client, submitted, programme_manager):
    client.force_login(programme_manager)
    assert _review_action(client, submitted, "reject", {"reason": ""}).status_code == 400
    _review_action(client, submitted, "reject", {"reason": "Out of scope for this call."})
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.REJECTED
    assert submitted.decided_by == programme_manager


def test_applicants_cannot_use_review_actions(client, submitted, owner):
    client.force_login(owner)
    response = _review_action(client, submitted, "reject", {"reason": "self-reject"})
    assert response.status_code == 403
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.SUBMITTED


def test_statements_are_private(client, submitted, programme_manager, member):
    from portal.credits.services import account_for_organisation

    account = account_for_organisation(submitted.organisation)
    month = timezone.localdate().strftime("%Y-%m")
    url = reverse("credits:statement", args=[account.public_id, month])
    stranger = MembershipFactory(role=Role.OWNER).user
    client.force_login(stranger)
    assert client.get(url).status_code == 404
    client.force_login(member)
    assert client.get(url).status_code == 200
    assert (
        client.get(reverse("credits:statement", args=[account.public_id, "2026-13"])).status_code
        == 404
    )


def test_review_page_ids_are_unique_so_labels_point_at_their_own_fields(
    client, submitted, programme_manager
):
    import re

    client.force_login(programme_manager)
    html = client.get(reverse("dashboard:application_review", args=[submitted.public_id]))
    ids = re.findall(r'\bid="([^"]+)"', html.content.decode())
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("month", ["9999-12", "0001-01", "2026-13", "soon"])
def test_statement_pages_refuse_months_outside_the_books(client, submitted, owner, month):
    from portal.credits.services import account_for_organisation

    account = account_for_organisation(submitted.organisation)
    client.force_login(owner)
    for name in ("credits:statement", "credits:statement_csv"):
        assert client.get(reverse(name, args=[account.public_id, month])).status_code == 404
