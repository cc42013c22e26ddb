"""On PostgreSQL a hold is one round trip: the function llm_usage_hold (sql/llm_usage_hold.sql),
installed by migration 0002, doing what the ORM's path does (test_holds.py and
test_holds_concurrency.py run against it)."""

import uuid

import pytest
from django.db import connection

from inference.usage.models import ModelRequest, ModelSpend
from inference.usage.services import QuotaExceeded, request_hold

from .conftest import fund

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's path"),
]

M = 1_000_000


def _hold(account, model, key, cost):
    return request_hold(
        request_id=f"req-{uuid.uuid4().hex}",
        account=account,
        model=model,
        endpoint=ModelRequest.Endpoint.CHAT,
        stream=True,
        max_cost_microcredits=cost,
        api_key=key,
    )


def test_a_hold_is_one_statement(org_account, model, key, django_assert_num_queries):
    # given a funded account whose spend row exists already
    fund(org_account, 5)
    _hold(org_account, model, key, 1 * M)
    # when another request is held, then one statement did it (a savepoint around it here, as
    # the test runs inside a transaction: SAVEPOINT and RELEASE are the other two)
    with django_assert_num_queries(3) as captured:
        request = _hold(org_account, model, key, 2 * M)
    assert sum("llm_usage_hold" in q["sql"] for q in captured.captured_queries) == 1
    # and the row is what the ORM would have written
    stored = ModelRequest.objects.get(pk=request.pk)
    assert (stored.request_id, stored.status, stored.held_microcredits, stored.stream) == (
        request.request_id, ModelRequest.Status.RUNNING, 2 * M, True,
    )  # fmt: skip
    assert stored.api_key_id == key.pk
    assert stored.account_id == org_account.pk
    assert stored.started_at == request.started_at


def test_the_first_hold_opens_the_spend_row_and_a_refusal_writes_nothing(org_account, model, key):
    # given a funded account with no spend row yet
    fund(org_account, 2)
    assert not ModelSpend.objects.filter(account=org_account).exists()
    # when a hold over the balance is refused
    with pytest.raises(QuotaExceeded) as refused:
        _hold(org_account, model, key, 2 * M + 1)
    # then it said what was available and wrote no request
    assert refused.value.available_microcredits == 2 * M
    assert not ModelRequest.objects.filter(account=org_account).exists()
    # and one within it is held, against the spend row it opened
    _hold(org_account, model, key, 2 * M)
    assert ModelSpend.objects.filter(account=org_account).count() == 1
    with pytest.raises(QuotaExceeded) as refused:
        _hold(org_account, model, key, 1)
    assert refused.value.available_microcredits == 0
