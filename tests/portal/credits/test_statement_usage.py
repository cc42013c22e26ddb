"""A statement's usage section names each sandbox as its holder knows it, in the page, the CSV
and the API, and still adds up to the ledger."""

import csv
import io
import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.credits.selectors import statement_for
from portal.credits.services import usage_charge
from tests.portal.api.conftest import API, key_client, make_key
from tests.portal.credits.helpers import lot, org_account

pytestmark = pytest.mark.django_db

NAMED = str(uuid.uuid4())
UNNAMED = str(uuid.uuid4())


@pytest.fixture
def account(organisation):
    account = org_account(organisation)
    lot(account, 100_000)
    # two intervals of a named sandbox on one profile, one of an older charge without a name
    for n, seconds in enumerate((600, 300)):
        usage_charge(
            account=account,
            credit_seconds=seconds,
            idempotency_key=f"usage:named:{n}",
            metadata={"sandbox": NAMED, "sandbox_name": "whisper-urdu", "profile": "gpu-1"},
        )
    usage_charge(
        account=account,
        credit_seconds=120,
        idempotency_key="usage:unnamed",
        metadata={"sandbox": UNNAMED, "profile": "cpu"},
    )
    return account


def test_the_statement_groups_usage_by_sandbox_with_its_name(account):
    statement = statement_for(account=account, month=timezone.localdate().replace(day=1))

    lines = {line.sandbox: line for line in statement.usage_by_sandbox}
    assert (lines[NAMED].name, lines[NAMED].label, lines[NAMED].credit_seconds) == (
        "whisper-urdu",
        "whisper-urdu",
        -900,
    )
    assert (lines[UNNAMED].name, lines[UNNAMED].label, lines[UNNAMED].credit_seconds) == (
        "",
        UNNAMED,
        -120,
    )
    assert sum(line.credit_seconds for line in lines.values()) == statement.totals["usage"]


def test_the_page_csv_and_api_show_the_name(client, account, owner):
    client.force_login(owner)
    month = timezone.localdate().strftime("%Y-%m")

    page = client.get(reverse("credits:statement", args=[account.public_id, month]))
    assert page.status_code == 200
    assert "whisper-urdu" in page.content.decode()

    body = client.get(reverse("credits:statement_csv", args=[account.public_id, month]))
    rows = csv.DictReader(io.StringIO(body.content.decode()))
    rows = [row for row in rows if row["section"] == "usage"]
    assert {(r["sandbox"], r["description"], r["credit_seconds"]) for r in rows} == {
        (NAMED, "whisper-urdu", "-900"),
        (UNNAMED, "", "-120"),
    }

    _key, full_key = make_key(user=owner)
    api = key_client(full_key).get(f"{API}/credits/statements/{month}")
    assert api.status_code == 200
    assert {
        (row["sandbox"], row["sandbox_name"], row["credit_seconds"]) for row in api.json()["usage"]
    } == {(NAMED, "whisper-urdu", -900), (UNNAMED, "", -120)}
