"""Exactness: whatever the requests cost and whenever the posting runs, the ledger has charged
exactly the whole credit-seconds of everything priced, and less than one credit-second waits."""

import uuid
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.usage.models import ModelRequest, ModelSpend
from inference.usage.services import model_charges_post, request_finish, request_hold
from portal.credits.models import LedgerEntry
from portal.credits.services import account_for_organisation
from tests.factories import OrganisationFactory

from .conftest import fund, org_key, served_model

pytestmark = pytest.mark.django_db

M = 1_000_000
PRICES = st.integers(min_value=0, max_value=9_999).map(lambda n: Decimal(n) / 1000)
REQUESTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3_000),  # prompt tokens
        st.integers(min_value=0, max_value=500),  # completion tokens
        st.booleans(),  # the posting runs after this request
    ),
    min_size=1,
    max_size=25,
)


def _charged(account) -> int:
    return -(
        LedgerEntry.objects.filter(account=account, kind="usage").aggregate(s=Sum("amount"))["s"]
        or 0
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(input_price=PRICES, output_price=PRICES, requests=REQUESTS)
def test_the_ledger_charges_exactly_the_whole_credit_seconds_priced(
    input_price, output_price, requests
):
    with transaction.atomic():  # each example starts from the same books
        organisation = OrganisationFactory()
        account = account_for_organisation(organisation)
        fund(account, 10**9)
        key = org_key(organisation)
        model = served_model(input_price=input_price, output_price=output_price)
        total = 0
        for prompt, completion, post_now in requests:
            cost = model.cost_microcredits(prompt_tokens=prompt, completion_tokens=completion)
            request = request_hold(
                request_id=f"req-{uuid.uuid4().hex}",
                account=account,
                model=model,
                endpoint=ModelRequest.Endpoint.CHAT,
                stream=True,
                max_cost_microcredits=cost,
                api_key=key,
            )
            request_finish(
                request_id=request.request_id, prompt_tokens=prompt, completion_tokens=completion
            )
            total += cost
            if post_now:
                model_charges_post()
                _assert_exact(account, total)
        model_charges_post()
        _assert_exact(account, total)
        transaction.set_rollback(True)


def _assert_exact(account, total: int) -> None:
    assert _charged(account) == total // M
    spend = ModelSpend.objects.filter(account=account).first()
    priced = spend.priced_microcredits if spend else 0
    charged = spend.charged_credit_seconds if spend else 0
    waiting = (
        ModelRequest.objects.filter(account=account, status=ModelRequest.Status.FINISHED).aggregate(
            s=Sum("cost_microcredits")
        )["s"]
        or 0
    )
    assert charged == total // M
    assert priced + waiting == total
    assert 0 <= priced - charged * M + waiting < M  # what is not yet charged: under one
