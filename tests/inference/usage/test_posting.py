"""Posting finished requests to the ledger: whole credit-seconds of the running total, the
fraction carried, each request charged once, whatever retries or crashes happen."""

import asyncio
import uuid
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Sum

from inference.usage import services
from inference.usage.models import ModelCharge, ModelRequest, ModelSpend
from inference.usage.services import model_charges_post, request_finish, request_hold
from portal.credits.charge_metadata import ChargeMetadata
from portal.credits.models import CreditAccount, LedgerEntry, LedgerTransaction
from sandboxes.live.broadcast import organisation_group

from .conftest import fund, org_key, served_model

pytestmark = pytest.mark.django_db

M = 1_000_000


def finished(account, model, key, *, prompt, completion=0, user=None):
    """A request held and finished with these tokens (1,500 and 2,250 microcredits each)."""
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


def charged_total(account) -> int:
    """What the ledger has taken from the account for usage."""
    return -(
        LedgerEntry.objects.filter(account=account, kind="usage").aggregate(s=Sum("amount"))["s"]
        or 0
    )


def balance_of(account) -> int:
    return CreditAccount.objects.values_list("balance", flat=True).get(pk=account.pk)


def test_a_posting_charges_whole_credit_seconds_and_carries_the_fraction(org_account, model, key):
    # given 100 credit-seconds and two finished requests costing 1.5 + 0.9 credit-seconds
    fund(org_account, 100)
    first = finished(org_account, model, key, prompt=1000)  # 1,500,000
    second = finished(org_account, model, key, prompt=200, completion=266)  # 300,000 + 598,500
    # when finished requests are posted
    assert model_charges_post() == 2
    # then the ledger took 2 credit-seconds, 0.3985 carries, and both requests name the charge
    assert charged_total(org_account) == 2
    assert balance_of(org_account) == 98
    spend = ModelSpend.objects.get(account=org_account)
    assert (spend.priced_microcredits, spend.charged_credit_seconds) == (2_398_500, 2)
    charge = ModelCharge.objects.get(account=org_account)
    assert (charge.credit_seconds, charge.charged) == (2, 2)
    for request in (first, second):
        request.refresh_from_db()
        assert (request.status, request.charge_id) == (ModelRequest.Status.POSTED, charge.pk)
    # and the ledger transaction says it is model usage, by model and key
    txn = LedgerTransaction.objects.get(public_id=charge.transaction_public_id)
    assert txn.idempotency_key == charge.idempotency_key
    assert txn.description == "Model usage"
    metadata = ChargeMetadata.from_json(txn.metadata)
    assert metadata.is_model_usage
    assert metadata.sandbox is None
    assert metadata.model_microcredits == 2_398_500
    assert metadata.model_usage == [
        {
            "model": model.name,
            "key": str(key.public_id),
            "key_name": key.name,
            "requests": 2,
            "prompt_tokens": 1200,
            "completion_tokens": 266,
            "microcredits": 2_398_500,
        }
    ]


def test_the_next_posting_adds_the_carried_fraction(org_account, model, key):
    fund(org_account, 100)
    finished(org_account, model, key, prompt=400)  # 0.6
    # a posting of less than one credit-second charges nothing: the request waits
    assert model_charges_post() == 0
    assert charged_total(org_account) == 0
    assert ModelRequest.objects.get().status == ModelRequest.Status.FINISHED
    # with the next request (0.6 more) they reach 1.2: one credit-second, 0.2 carried
    finished(org_account, model, key, prompt=400)
    assert model_charges_post() == 2
    assert charged_total(org_account) == 1
    spend = ModelSpend.objects.get(account=org_account)
    assert spend.priced_microcredits - spend.charged_credit_seconds * M == 200_000
    # 0.2 carried + 0.9 = 1.1: one more credit-second
    finished(org_account, model, key, prompt=600)
    assert model_charges_post() == 1
    assert charged_total(org_account) == 2


def test_a_retried_posting_charges_nothing_twice(org_account, model, key):
    fund(org_account, 100)
    finished(org_account, model, key, prompt=5000)  # 7.5
    model_charges_post()
    transactions = LedgerTransaction.objects.count()
    assert charged_total(org_account) == 7
    assert model_charges_post() == 0
    assert model_charges_post() == 0
    assert charged_total(org_account) == 7
    assert LedgerTransaction.objects.count() == transactions
    assert ModelCharge.objects.count() == 1


def test_a_posting_killed_half_way_leaves_nothing_then_posts_once(
    org_account, model, key, monkeypatch
):
    # given a finished request, and a worker that dies after the ledger posted, before the
    # requests are marked
    fund(org_account, 100)
    finished(org_account, model, key, prompt=5000)  # 7.5
    real_update = services.ModelSpend.objects.filter

    class Killed(Exception):
        pass

    def dying(*args, **kwargs):
        if "pk" in kwargs:
            raise Killed
        return real_update(*args, **kwargs)

    monkeypatch.setattr(services.ModelSpend.objects, "filter", dying)
    assert model_charges_post() == 0  # the failure is logged; the account's posting rolled back
    # then nothing of it stayed: no charge, no ledger transaction, the request still finished
    assert charged_total(org_account) == 0
    assert ModelCharge.objects.count() == 0
    assert ModelRequest.objects.get().status == ModelRequest.Status.FINISHED
    # and the next run posts it once
    monkeypatch.undo()
    assert model_charges_post() == 1
    assert charged_total(org_account) == 7
    assert model_charges_post() == 0
    assert charged_total(org_account) == 7


def test_accounts_are_posted_separately(org_account, model, key, student, student_account):
    from .conftest import personal_key

    fund(org_account, 100)
    fund(student_account, 100)
    finished(org_account, model, key, prompt=2000)  # 3
    finished(student_account, model, personal_key(student), prompt=1000)  # 1.5
    assert model_charges_post() == 2
    assert (charged_total(org_account), charged_total(student_account)) == (3, 1)
    keys = set(ModelCharge.objects.values_list("idempotency_key", flat=True))
    assert len(keys) == 2


def test_breakdown_by_model_and_key(org_account, organisation, key):
    chat = served_model(name="a-chat")
    other = served_model(name="b-chat", input_price=Decimal("0.500"), output_price=Decimal("1.000"))
    second_key = org_key(organisation, name="ci key")
    fund(org_account, 100)
    finished(org_account, chat, key, prompt=1000, completion=10)
    finished(org_account, chat, second_key, prompt=100)
    finished(org_account, other, key, prompt=2000, completion=1000)
    finished(org_account, chat, key, prompt=10)
    model_charges_post()
    txn = LedgerTransaction.objects.get(kind="usage")
    usage = ChargeMetadata.from_json(txn.metadata).model_usage
    assert [(u["model"], u["key_name"], u["requests"]) for u in usage] == sorted(
        [("a-chat", "org key", 2), ("a-chat", "ci key", 1), ("b-chat", "org key", 1)],
        key=lambda u: (u[0], {key.name: key.pk, second_key.name: second_key.pk}[u[1]]),
    )
    chat_cost = (1000 + 100 + 10) * 1500 + 10 * 2250
    assert sum(u["microcredits"] for u in usage) == chat_cost + 2000 * 500 + 1000 * 1000


def test_a_grant_expiring_between_hold_and_posting_leaves_the_balance_at_zero(
    org_account, model, key
):
    # given two lots, and a request held against both
    short = fund(org_account, 3)
    fund(org_account, 2)
    finished(org_account, model, key, prompt=3000)  # 4.5 credit-seconds
    # when the larger lot expires before the posting
    from tests.portal.credits.helpers import lapse

    lapse(short)
    model_charges_post()
    # then the ledger took what was left (2), recorded the rest unpaid, and no balance is
    # below zero
    charge = ModelCharge.objects.get()
    assert (charge.credit_seconds, charge.charged) == (4, 2)
    txn = LedgerTransaction.objects.get(public_id=charge.transaction_public_id)
    assert ChargeMetadata.from_json(txn.metadata).unpaid == 2
    assert balance_of(org_account) >= 0
    assert CreditAccount.objects.filter(balance__lt=0).count() == 0
    # and a later posting does not ask for the unpaid part again
    assert ModelSpend.objects.get().charged_credit_seconds == 4
    fund(org_account, 10)
    assert model_charges_post() == 0
    assert charged_total(org_account) == 2


def test_an_empty_account_is_charged_nothing_and_the_charge_says_so(org_account, model, key):
    lot = fund(org_account, 2)
    finished(org_account, model, key, prompt=1000)
    from tests.portal.credits.helpers import lapse

    lapse(lot)
    model_charges_post()
    charge = ModelCharge.objects.get()
    assert (charge.credit_seconds, charge.charged, charge.transaction_public_id) == (1, 0, None)
    assert ModelRequest.objects.get().status == ModelRequest.Status.POSTED
    assert charged_total(org_account) == 0


def test_free_requests_are_closed_without_a_charge(org_account, key):
    free = served_model(input_price=Decimal("0"), output_price=Decimal("0"))
    fund(org_account, 1)
    finished(org_account, free, key, prompt=100, completion=100)
    assert model_charges_post() == 1
    assert ModelRequest.objects.get().status == ModelRequest.Status.POSTED
    assert ModelCharge.objects.count() == 0
    assert LedgerTransaction.objects.filter(kind="usage").count() == 0


def test_the_task_posts(org_account, model, key):
    from inference.usage.tasks import model_charges_post_task

    fund(org_account, 10)
    finished(org_account, model, key, prompt=1000)
    assert model_charges_post_task.apply().get() == 1
    assert charged_total(org_account) == 1


def test_the_beat_runs_the_posting_every_charge_interval(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["usage-model-charges-post"]
    assert entry["task"] == "usage.model_charges_post"
    assert entry["schedule"] == settings.LLM_CHARGE_INTERVAL


def test_the_browser_hears_the_new_balance_when_model_charges_post(
    org_account, organisation, model, key, django_capture_on_commit_callbacks
):
    # given 10 credit-seconds and a request costing 3
    fund(org_account, 10)
    finished(org_account, model, key, prompt=2000)
    layer = get_channel_layer()
    group = organisation_group(organisation.pk)

    def post_and_commit():
        with django_capture_on_commit_callbacks(execute=True):
            model_charges_post()

    async def watch_and_post():
        # someone watches the organisation's live stream (the real Redis layer, one loop)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            await sync_to_async(post_and_commit)()
            return await asyncio.wait_for(layer.receive(channel), timeout=10)
        finally:
            await layer.group_discard(group, channel)

    # when the posting commits, then they receive the account's balance after it
    message = async_to_sync(watch_and_post)()["message"]
    assert message["type"] == "credits.balance"
    assert message["account"] == str(org_account.public_id)
    assert message["balance_credit_seconds"] == 7


def test_one_accounts_failure_does_not_stop_the_others(
    org_account, model, key, student, student_account, monkeypatch
):
    from .conftest import personal_key

    # given two accounts with finished requests, and the first one's posting failing
    fund(org_account, 100)
    fund(student_account, 100)
    finished(org_account, model, key, prompt=2000)
    finished(student_account, model, personal_key(student), prompt=2000)
    real = services._account_charges_post

    def failing(account_id):
        if account_id == org_account.pk:
            raise RuntimeError("the ledger is away")
        return real(account_id)

    monkeypatch.setattr(services, "_account_charges_post", failing)
    # when the posting runs, then the other account is posted and the failed one waits
    assert model_charges_post() == 1
    assert (charged_total(org_account), charged_total(student_account)) == (0, 3)
    assert ModelRequest.objects.get(account=org_account).status == ModelRequest.Status.FINISHED
    monkeypatch.undo()
    assert model_charges_post() == 1
    assert charged_total(org_account) == 3
