"""Programme managers correct the books from the browser: revoke, adjust, always with a reason."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.credits.models import CreditGrant, LedgerTransaction
from portal.credits.services import account_for_organisation, grant_issue

pytestmark = pytest.mark.django_db


@pytest.fixture
def funded(organisation):
    account = account_for_organisation(organisation)
    grant = grant_issue(
        account=account,
        credit_seconds=10 * 3600,
        rate_pkr_per_gpu_hour=Decimal("500"),
        expires_at=timezone.now() + dt.timedelta(days=30),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key="test-grant",
    )
    return account, grant


def test_account_page_and_role_matrix(client, funded, programme_manager, owner):
    account, _grant = funded
    url = reverse("dashboard:account", args=[account.public_id])
    client.force_login(owner)
    assert client.get(url).status_code == 403
    client.force_login(programme_manager)
    assert client.get(url).context["available"] == 10 * 3600


def test_revoke_needs_a_reason_and_is_audited(client, funded, programme_manager):
    account, grant = funded
    url = reverse("dashboard:grant_revoke", args=[grant.public_id])
    client.force_login(programme_manager)
    client.post(url, {"reason": ""})
    grant.refresh_from_db()
    assert grant.remaining == 10 * 3600
    client.post(url, {"reason": "Company dissolved", "next": "https://evil.example/"})
    grant.refresh_from_db()
    account.refresh_from_db()
    assert (grant.remaining, account.balance) == (0, 0)
    assert grant.revoked_at is not None
    event = AuditEvent.objects.get(action="credits.grant_revoked")
    assert event.data["reason"] == "Company dissolved"


def test_revoke_redirect_stays_on_site(client, funded, programme_manager):
    _account, grant = funded
    client.force_login(programme_manager)
    response = client.post(
        reverse("dashboard:grant_revoke", args=[grant.public_id]),
        {"reason": "x", "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("dashboard:applications")


def test_adjustment_posts_once_per_form_token(client, funded, programme_manager):
    account, _grant = funded
    client.force_login(programme_manager)
    token = str(uuid.uuid4())
    data = {"gpu_hours": "-2.5", "reason": "Double-charged on 3 May", "token": token}
    url = reverse("dashboard:account_adjust", args=[account.public_id])
    client.post(url, data)
    client.post(url, data)  # a double submit of the same form
    account.refresh_from_db()
    assert account.balance == 10 * 3600 - 9000
    assert LedgerTransaction.objects.filter(kind="adjustment").count() == 1
    assert AuditEvent.objects.filter(action="credits.adjustment_posted").count() == 1


@pytest.mark.parametrize(
    "data",
    [
        {"gpu_hours": "0", "reason": "x"},
        {"gpu_hours": "5", "reason": ""},
        {"gpu_hours": "abc", "reason": "x"},
        {"gpu_hours": "-1000", "reason": "more than there is"},
    ],
)
def test_bad_adjustments_change_nothing(client, funded, programme_manager, data):
    account, _grant = funded
    client.force_login(programme_manager)
    response = client.post(
        reverse("dashboard:account_adjust", args=[account.public_id]),
        {**data, "token": str(uuid.uuid4())},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]]
    account.refresh_from_db()
    assert account.balance == 10 * 3600
    assert not LedgerTransaction.objects.filter(kind="adjustment").exists()
