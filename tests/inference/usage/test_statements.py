"""Statements show model usage by model and key beside sandbox usage: the page, the CSV and the
API, adding up to the ledger; a person's requests never appear on an organisation's statement."""

import csv
import io
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from inference.usage.models import ModelRequest
from inference.usage.services import model_charges_post, request_finish, request_hold
from portal.credits.selectors import statement_for
from portal.credits.services import account_for_organisation, usage_charge
from tests.factories import MembershipFactory
from tests.portal.api.conftest import API, key_client, make_key

from .conftest import fund, org_key, personal_key, served_model

pytestmark = pytest.mark.django_db

SANDBOX = str(uuid.uuid4())


def finished(account, model, key=None, *, prompt, completion=0, user=None):
    request = request_hold(
        request_id=f"req-{uuid.uuid4().hex}",
        account=account,
        model=model,
        endpoint=ModelRequest.Endpoint.CHAT,
        stream=False,
        max_cost_microcredits=model.cost_microcredits(
            prompt_tokens=prompt, completion_tokens=completion
        ),
        api_key=key,
        user=user,
    )
    return request_finish(
        request_id=request.request_id, prompt_tokens=prompt, completion_tokens=completion
    )


@pytest.fixture
def used(organisation, owner):
    """An organisation's month: a sandbox's usage, and requests to two models by two keys and
    by a member in the playground, posted twice."""
    account = account_for_organisation(organisation)
    fund(account, 10_000)
    usage_charge(
        account=account,
        credit_seconds=600,
        idempotency_key=f"usage:{SANDBOX}:0",
        metadata={"sandbox": SANDBOX, "sandbox_name": "whisper-urdu", "profile": "gpu-1"},
    )
    chat = served_model(name="qalam-chat")
    embed = served_model(
        name="qalam-embed", task="embedding", input_price=Decimal("0.100"), output_price=0
    )
    ci, app = org_key(organisation, name="ci"), org_key(organisation, name="app")
    finished(account, chat, ci, prompt=1000, completion=200)  # 1.95
    finished(account, chat, app, prompt=3000)  # 4.5
    model_charges_post()
    finished(account, chat, ci, prompt=700, completion=100)  # 1.275
    finished(account, embed, app, prompt=9000)  # 0.9
    finished(account, chat, None, prompt=100, completion=1000, user=owner)  # 2.4
    model_charges_post()
    return {"account": account, "ci": ci, "app": app}


def test_the_statement_shows_model_usage_by_model_and_key(used):
    account = used["account"]
    statement = statement_for(account=account, month=timezone.localdate().replace(day=1))
    lines = {(line.model, line.key_label): line for line in statement.usage_by_model}
    assert set(lines) == {
        ("qalam-chat", ""),
        ("qalam-chat", "app"),
        ("qalam-chat", "ci"),
        ("qalam-embed", "app"),
    }
    ci = lines[("qalam-chat", "ci")]
    assert (ci.requests, ci.prompt_tokens, ci.completion_tokens) == (2, 1700, 300)
    assert ci.microcredits == 1700 * 1500 + 300 * 2250
    assert ci.key == str(used["ci"].public_id)
    assert lines[("qalam-chat", "")].key is None  # the playground
    priced = sum(line.microcredits for line in statement.usage_by_model)
    assert priced == 1_950_000 + 4_500_000 + 1_275_000 + 900_000 + 2_400_000
    # the ledger charged the whole credit-seconds of it, beside the sandbox's 600
    assert statement.model_usage.credit_seconds == -(priced // 1_000_000)
    assert [line.sandbox for line in statement.usage_by_sandbox] == [SANDBOX]
    assert statement.totals["usage"] == -600 - priced // 1_000_000
    assert statement.closing == 10_000 - 600 - priced // 1_000_000


def test_the_page_csv_and_api_show_model_usage(client, used, owner, organisation):
    account = used["account"]
    month = timezone.localdate().strftime("%Y-%m")
    client.force_login(owner)

    page = client.get(reverse("credits:statement", args=[account.public_id, month]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "Model usage by model and key" in body
    assert "qalam-embed" in body
    assert "whisper-urdu" in body

    csv_body = client.get(reverse("credits:statement_csv", args=[account.public_id, month]))
    rows = list(csv.DictReader(io.StringIO(csv_body.content.decode())))
    assert [r["credit_seconds"] for r in rows if r["section"] == "model_usage"] == ["-11"]
    assert len([r for r in rows if r["section"] == "model"]) == 4
    assert [r["sandbox"] for r in rows if r["section"] == "usage"] == [SANDBOX]

    _key, full_key = make_key(organisation=organisation, acting_user=owner)
    api = key_client(full_key).get(f"{API}/credits/statements/{month}")
    assert api.status_code == 200
    data = api.json()
    assert data["model_usage_credit_seconds"] == -11
    assert [r["sandbox"] for r in data["usage"]] == [SANDBOX]
    embed = next(r for r in data["model_usage"] if r["model"] == "qalam-embed")
    assert embed == {
        "model": "qalam-embed",
        "key": str(used["app"].public_id),
        "key_name": "app",
        "requests": 1,
        "prompt_tokens": 9000,
        "completion_tokens": 0,
        "cost_microcredits": 900_000,
        "cost_credit_seconds": "0.900000",
    }


def test_a_month_without_model_usage_reads_as_before(client, organisation, owner):
    account = account_for_organisation(organisation)
    fund(account, 100)
    statement = statement_for(account=account, month=timezone.localdate().replace(day=1))
    assert statement.model_usage is None
    assert statement.usage_by_model == []
    _key, full_key = make_key(organisation=organisation, acting_user=owner)
    data = key_client(full_key).get(f"{API}/credits/statements/{timezone.localdate():%Y-%m}")
    assert (data.json()["model_usage"], data.json()["model_usage_credit_seconds"]) == ([], 0)


def test_a_students_requests_never_reach_the_organisations_statement(
    organisation, student, student_account
):
    # given a student who is a member of an organisation, calling with a personal key
    MembershipFactory(organisation=organisation, user=student)
    organisation_account = account_for_organisation(organisation)
    fund(organisation_account, 100)
    fund(student_account, 100)
    model = served_model()
    finished(student_account, model, personal_key(student), prompt=2000)
    model_charges_post()
    month = timezone.localdate().replace(day=1)
    # then the student's own statement shows it, the organisation's does not
    assert statement_for(account=student_account, month=month).model_usage.credit_seconds == -3
    organisation_statement = statement_for(account=organisation_account, month=month)
    assert organisation_statement.model_usage is None
    assert organisation_statement.closing == 100


def test_the_ledger_api_breaks_a_model_charge_down(used, organisation, owner):
    _key, full_key = make_key(organisation=organisation, acting_user=owner)
    entries = key_client(full_key).get(f"{API}/credits/ledger?kind=usage").json()["results"]
    sandbox = [e for e in entries if e["sandbox"] == SANDBOX]
    models = [e for e in entries if e["model_usage"] is not None]
    assert len(sandbox) == 1
    assert sandbox[0]["model_usage"] is None
    assert [e["description"] for e in models] == ["Model usage", "Model usage"]
    assert sum(e["amount_credit_seconds"] for e in models) == -11
    first = next(e for e in models if e["amount_credit_seconds"] == -6)  # 1.95 + 4.5
    assert sorted((u["key_name"], u["cost_microcredits"]) for u in first["model_usage"]) == [
        ("app", 4_500_000),
        ("ci", 1_950_000),
    ]
    assert {u["cost_credit_seconds"] for u in first["model_usage"]} == {"4.500000", "1.950000"}
