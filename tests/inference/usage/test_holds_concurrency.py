"""Holds under real concurrency, on PostgreSQL: many threads holding against one account at
once never hold more than it has. Each test commits for real (transaction=True)."""

import threading
import uuid

import pytest
from django.db import connection

from inference.usage.models import ModelCharge, ModelRequest, ModelSpend
from inference.usage.services import (
    QuotaExceeded,
    model_charges_post,
    request_finish,
    request_hold,
)
from portal.credits.models import CreditAccount, LedgerEntry

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


def _post(barrier, results):
    try:
        connection.ensure_connection()  # connect before the start line
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        results.append(("posted", model_charges_post()))
    except Exception as exc:
        results.append(("error", repr(exc)))
    finally:
        connection.close()


def _finish_and_hold(account_pk, model, key, request_ids, barrier, results):
    """Finish the given requests one by one and hold a new one after each, while postings run."""
    try:
        account = CreditAccount.objects.get(pk=account_pk)
        barrier.wait(timeout=JOIN_TIMEOUT_S)
        for request_id in request_ids:
            request_finish(request_id=request_id, prompt_tokens=700, completion_tokens=0)
            try:
                request_hold(
                    request_id=f"late-{uuid.uuid4().hex}",
                    account=account,
                    model=model,
                    endpoint=ModelRequest.Endpoint.CHAT,
                    stream=False,
                    max_cost_microcredits=1_050_000,
                    api_key=key,
                )
                results.append(("held", request_id))
            except QuotaExceeded:
                results.append(("refused", request_id))
    except Exception as exc:
        results.append(("error", repr(exc)))
    finally:
        connection.close()


def test_postings_finishes_and_holds_at_once_charge_each_request_exactly_once(
    org_account, model, key
):
    # given 40 credit-seconds and 20 running requests of 1.05 credit-seconds each
    fund(org_account, 40)
    ids = []
    for n in range(20):
        ids.append(f"run-{n}")
        request_hold(
            request_id=f"run-{n}",
            account=org_account,
            model=model,
            endpoint=ModelRequest.Endpoint.CHAT,
            stream=False,
            max_cost_microcredits=1_050_000,
            api_key=key,
        )
    # when 4 threads finish them (holding a new one after each) while 6 workers post at once,
    # three times over
    results: list = []
    for _round in range(3):
        barrier = threading.Barrier(10)
        threads = [
            threading.Thread(
                target=_finish_and_hold,
                args=(
                    org_account.pk,
                    model,
                    key,
                    ids[n::4] if _round == 0 else [],
                    barrier,
                    results,
                ),
                daemon=True,
            )
            for n in range(4)
        ] + [threading.Thread(target=_post, args=(barrier, results), daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
        assert [t for t in threads if t.is_alive()] == []
    model_charges_post()
    # then nothing failed, every finished request is posted once, and the ledger took exactly
    # the whole credit-seconds of what they cost
    assert [r for r in results if r[0] == "error"] == []
    finished_cost = 20 * 700 * 1_500
    posted = ModelRequest.objects.filter(account=org_account, status=ModelRequest.Status.POSTED)
    assert posted.count() == 20
    assert sum(posted.values_list("cost_microcredits", flat=True)) == finished_cost
    charged = -sum(
        LedgerEntry.objects.filter(account=org_account, kind="usage").values_list(
            "amount", flat=True
        )
    )
    assert charged == finished_cost // 1_000_000
    assert sum(c.credit_seconds for c in ModelCharge.objects.filter(account=org_account)) == charged
    assert CreditAccount.objects.get(pk=org_account.pk).balance == 40 - charged
    # and the late holds never held more than what was left
    running = ModelRequest.objects.filter(account=org_account, status=ModelRequest.Status.RUNNING)
    spend = ModelSpend.objects.get(account=org_account)
    carried = spend.priced_microcredits - spend.charged_credit_seconds * 1_000_000
    assert sum(running.values_list("held_microcredits", flat=True)) + carried <= (
        (40 - charged) * 1_000_000
    )
