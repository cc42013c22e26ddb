"""The audit log: its page's filters, its CSV export (same filters as the page, every matching
row, streamed, safe to open in a spreadsheet), and every programme-manager action on the
programme pages audited."""

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.models import AuditEvent
from portal.audit.services import audit_record
from portal.credits.models import CreditApplication, CreditGrant
from portal.credits.services import account_for_organisation, grant_issue
from portal.organisations.models import Role
from portal.users.services import programme_manager_grant
from tests.conftest import totp_activate
from tests.factories import (
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
EXPORT = "dashboard:audit_export"


def _rows(response) -> list[list[str]]:
    assert response.streaming
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.reader(io.StringIO(body)))


# --- The page ---------------------------------------------------------------------------------


def test_audit_log_filters(client, programme_manager):
    alice = UserFactory(email="alice@example.pk")
    audit_record(actor=alice, action="auth.signed_in", target=alice)
    audit_record(actor=alice, action="invitation.created", target=alice)
    audit_record(actor=None, action="auth.sign_in_failed", data={"email": "mallory@example.pk"})
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:audit"), {"actor": "alice", "action": "auth.signed_in"})
    events = list(page.context["page"])
    assert [e.action for e in events] == ["auth.signed_in"]
    assert events[0].actor_email == "alice@example.pk"


def test_the_audit_page_names_actions_by_their_labels(client, programme_manager):
    audit_record(actor=None, action=AuditAction.AUTH_SIGN_IN_FAILED, data={})
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:audit")).content.decode()
    assert '<option value="auth.sign_in_failed">Sign-in failed</option>' in page
    assert "Sign-in failed <code>auth.sign_in_failed</code>" in page


def test_audit_log_rejects_an_inverted_date_range(client, programme_manager):
    client.force_login(programme_manager)
    response = client.get(
        reverse("dashboard:audit"), {"date_from": "2026-05-02", "date_to": "2026-05-01"}
    )
    assert response.status_code == 400
    assert "date_to" in response.context["form"].errors


# --- The export -------------------------------------------------------------------------------


def test_the_export_has_every_matching_event_not_one_page(client, programme_manager):
    alice = UserFactory(email="alice@example.pk")
    for _ in range(60):  # more than a page of the log (50)
        audit_record(actor=alice, action="auth.signed_in", target=alice)
    audit_record(actor=alice, action="invitation.created", target=alice)
    audit_record(actor=None, action="auth.sign_in_failed", data={"email": "mallory@example.pk"})
    client.force_login(programme_manager)

    response = client.get(reverse(EXPORT), {"actor": "alice", "action": "auth.signed_in"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    header, *rows = _rows(response)
    assert header == [
        "created_at",
        "actor_email",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "ip",
        "data",
    ]
    assert len(rows) == 60
    assert {(row[1], row[2], row[3]) for row in rows} == {
        ("alice@example.pk", "auth.signed_in", "users.user")
    }


def test_the_export_takes_the_pages_date_filters(client, programme_manager):
    with time_machine.travel(timezone.now() - dt.timedelta(days=10), tick=False):
        audit_record(actor=None, action="cohort.created")
    audit_record(actor=None, action="cohort.updated")
    client.force_login(programme_manager)
    today = timezone.localdate()
    before = _rows(client.get(reverse(EXPORT), {"date_to": today - dt.timedelta(days=1)}))
    since = _rows(client.get(reverse(EXPORT), {"date_from": today}))
    assert [row[2] for row in before[1:]] == ["cohort.created"]
    assert "cohort.updated" in [row[2] for row in since[1:]]
    assert "cohort.created" not in [row[2] for row in since[1:]]


@pytest.mark.parametrize("start", ["=", "+", "-", "@"])
def test_cells_that_a_spreadsheet_would_run_are_written_as_text(client, programme_manager, start):
    # given events whose actor and target are text chosen by someone else
    audit_record(
        actor=UserFactory(email=f"{start}cmd@example.pk"),
        action="organisation.created",
        target=OrganisationFactory(legal_name=f'{start}HYPERLINK("http://evil.example","x")'),
        data={"note": "harmless"},
    )
    client.force_login(programme_manager)
    _header, row = _rows(client.get(reverse(EXPORT), {"action": "organisation.created"}))
    assert row[1] == f"'{start}cmd@example.pk"
    assert row[5] == f'\'{start}HYPERLINK("http://evil.example","x")'
    assert row[7] == '{"note": "harmless"}'  # what does not start so is left as it is


def test_a_bad_filter_is_refused_and_exports_nothing(client, programme_manager):
    client.force_login(programme_manager)
    response = client.get(reverse(EXPORT), {"date_from": "2026-05-02", "date_to": "2026-05-01"})
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_the_export_is_itself_audited_with_its_filters(client, programme_manager):
    client.force_login(programme_manager)
    _rows(client.get(reverse(EXPORT), {"action": "", "date_from": "2026-05-01"}))
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.actor == programme_manager
    assert event.data == {"date_from": "2026-05-01"}


def test_the_audit_page_links_to_the_export_with_its_filters(client, programme_manager):
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:audit"), {"actor": "alice"}).content.decode()
    assert f'href="{reverse(EXPORT)}?actor=alice"' in page


@pytest.fixture
def people(programme_manager_without_mfa):
    return {
        "student": StudentProfileFactory().user,
        "startup member": MembershipFactory(role=Role.MEMBER).user,
        "organisation admin": MembershipFactory(role=Role.ADMIN).user,
        "organisation owner": MembershipFactory(role=Role.OWNER).user,
        "programme manager without MFA": programme_manager_without_mfa,
    }


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(reverse(EXPORT))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


@pytest.mark.parametrize(
    "role",
    ["student", "startup member", "organisation admin", "organisation owner"],
)
def test_people_without_the_role_cannot_export(client, people, role):
    audit_record(actor=None, action="metering.drift")
    client.force_login(people[role])
    response = client.get(reverse(EXPORT))
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_a_programme_manager_without_mfa_sets_it_up_first(client, people):
    client.force_login(people["programme manager without MFA"])
    response = client.get(reverse(EXPORT))
    assert response["Location"] == reverse("mfa_activate_totp")
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


# --- Every programme-manager action on the programme pages is audited -----------------------


def _application(state: str) -> CreditApplication:
    organisation = OrganisationFactory()
    return CreditApplication.objects.create(
        organisation=organisation,
        created_by=organisation.created_by,
        title="Urdu OCR",
        summary="Train an OCR model on scanned newspapers.",
        sector="language",
        requested_gpu_hours=100,
        duration_months=3,
        data_sensitivity="public",
        state=state,
        submitted_at=timezone.now(),
    )


def _review(action, data=None):
    def act(client):
        application = _application("in_review" if action != "review" else "submitted")
        url = reverse("dashboard:application_review_action", args=[application.public_id, action])
        return client.post(url, data or {})

    return act


def _grant():
    return grant_issue(
        account=account_for_organisation(OrganisationFactory()),
        credit_seconds=10 * 3600,
        rate_pkr_per_gpu_hour=Decimal("500"),
        expires_at=timezone.now() + dt.timedelta(days=30),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=f"test-grant:{uuid.uuid4()}",
    )


def _revoke(client):
    url = reverse("dashboard:grant_revoke", args=[_grant().public_id])
    return client.post(url, {"reason": "Company dissolved"})


def _adjust(client):
    url = reverse("dashboard:account_adjust", args=[_grant().account.public_id])
    return client.post(url, {"gpu_hours": "2", "reason": "Outage", "token": str(uuid.uuid4())})


def _future(days=30) -> str:
    return (timezone.localtime() + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")


def _cohort_create(client):
    data = {"name": "Bootcamp", "capacity": 40, "expires_at": _future()}
    return client.post(reverse("dashboard:cohorts"), data)


def _cohort_update(client):
    cohort = CohortFactory()
    data = {"name": cohort.name, "capacity": 99, "expires_at": _future(60)}
    return client.post(reverse("dashboard:cohort", args=[cohort.public_id]), data)


def _cohort_deactivate(client):
    cohort = CohortFactory()
    return client.post(reverse("dashboard:cohort_deactivate", args=[cohort.public_id]))


def _export(client):
    response = client.get(reverse(EXPORT))
    b"".join(response.streaming_content)
    return response


PROGRAMME_MANAGER_ACTIONS = [
    ("application.review_started", _review("review")),
    (
        "application.approved",
        _review(
            "approve",
            {
                "gpu_hours": 50,
                "expires_on": (timezone.localdate() + dt.timedelta(days=90)).isoformat(),
                "rate_pkr_per_gpu_hour": "600",
            },
        ),
    ),
    ("application.changes_requested", _review("changes", {"message": "Say more."})),
    ("application.rejected", _review("reject", {"reason": "Out of scope."})),
    ("application.commented", _review("comment", {"message": "Which data set?"})),
    ("credits.grant_revoked", _revoke),
    ("credits.adjustment_posted", _adjust),
    ("cohort.created", _cohort_create),
    ("cohort.updated", _cohort_update),
    ("cohort.deactivated", _cohort_deactivate),
    ("audit.exported", _export),
]


@pytest.mark.parametrize(
    ("action", "act"), PROGRAMME_MANAGER_ACTIONS, ids=[a for a, _ in PROGRAMME_MANAGER_ACTIONS]
)
def test_every_programme_manager_action_is_in_the_audit_log(client, programme_manager, action, act):
    client.force_login(programme_manager)
    response = act(client)
    assert response.status_code in (200, 302)
    event = AuditEvent.objects.get(action=action)
    assert event.actor == programme_manager
    assert event.actor_email == programme_manager.email
    assert event.ip == "127.0.0.1"


@pytest.fixture
def many_events(transactional_db):
    alice = UserFactory(email="alice@example.pk")
    for _ in range(1200):  # more than two chunks of the stream
        audit_record(actor=alice, action="auth.signed_in", target=alice)
    manager = UserFactory(email="manager@programme.gov.pk")
    programme_manager_grant(user=manager, acting_user=None)
    totp_activate(manager)
    return manager


def _close_connection() -> None:
    connection.close()  # looked up in the thread that calls this


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_streams_chunk_by_chunk(many_events):
    # Django reads a plain iterator into memory before an ASGI server sends anything: under
    # ASGI the export hands over an asynchronous one that reads the cursor a chunk at a time.
    client = AsyncClient()
    await client.aforce_login(many_events)
    response = await client.get(reverse(EXPORT), {"action": "auth.signed_in", "actor": "alice"})
    assert response.status_code == 200
    assert response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    await sync_to_async(_close_connection)()  # the one the request's sync thread opened
    assert len(chunks) >= 3
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode("utf-8"))))
    assert len(rows) == 1 + 1200
