"""Holds under real concurrency, on PostgreSQL: many threads holding against one account at
once never hold more than it has. Each test commits for real (transaction=True)."""

import threading
import uuid

import pytest
from django.db import connection

from inference.usage.models import ModelRequest, ModelSpend
from inference.usage.services import QuotaExceeded, request_hold
from portal.credits.models import CreditAccount

from .conftest import fund

pytestmark = pytest.mark.django_db(transaction=True)

JOIN_TIMEOUT_S = 120  # far above a healthy run: only a deadlock or a hang reaches it
THREADS = 50


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("Row locks and concurrent writers need PostgreSQL; `make test` runs this")


def _hold_once(account_pk, model, key, cost, barrier, results):
    try:
        account = CreditAccount.objects.get(pk=account_pk)  # connect before the start line
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        try:
            request_hold(
                request_id=f"req-{uuid.uuid4().hex}",
                account=account,
                model=model,
                endpoint=ModelRequest.Endpoint.CHAT,
                stream=True,
                max_cost_microcredits=cost,
                api_key=key,
            )
        except QuotaExceeded:
            results.append("refused")
        else:
            results.append("held")
    except Exception as exc:  # any other outcome fails the test, with its repr
        results.append(repr(exc))
    finally:
        connection.close()


def _run_threads(args) -> list[str]:
    threads = [threading.Thread(target=_hold_once, args=a, daemon=True) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    return [t.name for t in threads if t.is_alive()]


@pytest.mark.parametrize("first_use", [True, False], ids=["spend-row-created-now", "existing"])
def test_fifty_threads_holding_at_once_never_overdraw(org_account, model, key, first_use):
    # given 7 credit-seconds, and 50 requests each wanting 0.3 of one (room for 23 of them)
    fund(org_account, 7)
    if not first_use:
        ModelSpend.objects.create(account=org_account)
    cost = 300_000
    barrier = threading.Barrier(THREADS)
    results: list[str] = []
    # when they all hold at once, each on its own connection
    stuck = _run_threads([(org_account.pk, model, key, cost, barrier, results)] * THREADS)
    # then exactly as many as fit were held, the rest refused, and nothing else happened
    assert stuck == []
    assert sorted(set(results)) == ["held", "refused"]
    assert results.count("held") == 7_000_000 // cost
    held = ModelRequest.objects.filter(account=org_account, status=ModelRequest.Status.RUNNING)
    assert held.count() == 23
    assert sum(held.values_list("held_microcredits", flat=True)) <= 7_000_000
    assert ModelSpend.objects.filter(account=org_account).count() == 1
