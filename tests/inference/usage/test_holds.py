"""Holds, finishes and releases: what a request may spend before it runs, what it costs after."""

import uuid
from decimal import Decimal

import pytest

from inference.usage.models import ModelRequest, ModelSpend
from inference.usage.services import (
    QuotaExceeded,
    UsageError,
    request_finish,
    request_hold,
    request_release,
)
from portal.core.exceptions import PermissionDenied
from portal.credits.services import account_for_organisation
from tests.factories import MembershipFactory, OrganisationFactory

from .conftest import fund, personal_key, served_model

pytestmark = pytest.mark.django_db

M = 1_000_000


def hold(account, model, key, cost, **extra):
    return request_hold(
        request_id=extra.pop("request_id", f"req-{uuid.uuid4().hex}"),
        account=account,
        model=model,
        endpoint=extra.pop("endpoint", ModelRequest.Endpoint.CHAT),
        stream=False,
        max_cost_microcredits=cost,
        api_key=key,
        **extra,
    )


def requests_snapshot():
    return list(
        ModelRequest.objects.order_by("pk").values_list(
            "request_id", "status", "held_microcredits", "cost_microcredits"
        )
    )


def test_hold_of_exactly_the_balance_is_accepted(org_account, model, key):
    # given an account with 3 credit-seconds
    fund(org_account, 3)
    # when a request holds exactly 3,000,000 microcredit-seconds
    request = hold(org_account, model, key, 3 * M)
    # then it runs, holding all of it
    request.refresh_from_db()
    assert request.status == ModelRequest.Status.RUNNING
    assert request.held_microcredits == 3 * M
    assert request.api_key == key


def test_hold_one_microcredit_over_the_balance_is_refused_and_writes_nothing(
    org_account, model, key
):
    # given an account with 3 credit-seconds
    fund(org_account, 3)
    # when a request would hold one microcredit-second more than that
    with pytest.raises(QuotaExceeded) as refused:
        hold(org_account, model, key, 3 * M + 1)
    # then nothing is written
    assert refused.value.available_microcredits == 3 * M
    assert ModelRequest.objects.count() == 0


def test_holds_and_unposted_costs_count_against_the_balance(org_account, model, key):
    # given 2 credit-seconds, one request holding 1.5 and one that finished costing 0.3
    fund(org_account, 2)
    hold(org_account, model, key, 1_500_000)
    finished = hold(org_account, model, key, 400_000)
    request_finish(request_id=finished.request_id, prompt_tokens=200, completion_tokens=0)
    assert ModelRequest.objects.get(pk=finished.pk).cost_microcredits == 300_000
    # when the next request needs what is left plus one, it is refused; exactly what is left
    # is accepted
    with pytest.raises(QuotaExceeded):
        hold(org_account, model, key, 200_001)
    last = hold(org_account, model, key, 200_000)
    assert last.status == ModelRequest.Status.RUNNING
    # then the account can hold nothing more
    with pytest.raises(QuotaExceeded):
        hold(org_account, model, key, 1)


def test_the_carried_fraction_counts_against_the_balance(org_account, model, key):
    # given 1 credit-second and 0.4 of one priced but not yet charged (the carried fraction)
    fund(org_account, 1)
    ModelSpend.objects.create(account=org_account, priced_microcredits=400_000)
    # then 0.6 is what may still be held
    with pytest.raises(QuotaExceeded):
        hold(org_account, model, key, 600_001)
    assert hold(org_account, model, key, 600_000).held_microcredits == 600_000


def test_an_account_with_no_credits_is_refused_even_a_free_request_past_zero(
    org_account, model, key
):
    with pytest.raises(QuotaExceeded):
        hold(org_account, model, key, 1)
    # a request whose maximum cost is zero (a free model) runs
    assert hold(org_account, model, key, 0).status == ModelRequest.Status.RUNNING


@pytest.mark.parametrize("cost", [-1, 1.5, "10", True, None, 2**62])
def test_a_bad_maximum_cost_is_refused(org_account, model, key, cost):
    fund(org_account, 10)
    with pytest.raises(UsageError):
        hold(org_account, model, key, cost)
    assert ModelRequest.objects.count() == 0


def test_a_request_id_is_held_once(org_account, model, key):
    fund(org_account, 10)
    hold(org_account, model, key, 10, request_id="chatcmpl-1")
    with pytest.raises(UsageError):
        hold(org_account, model, key, 10, request_id="chatcmpl-1")
    assert ModelRequest.objects.count() == 1


def test_an_unknown_endpoint_is_refused(org_account, model, key):
    fund(org_account, 10)
    with pytest.raises(UsageError):
        hold(org_account, model, key, 10, endpoint="images")
    assert ModelRequest.objects.count() == 0


def test_finish_prices_the_tokens_and_releases_the_hold(org_account, model, key):
    # given a held request
    fund(org_account, 10)
    request = hold(org_account, model, key, 2 * M)
    # when it finishes with 100 prompt and 30 completion tokens
    finished = request_finish(
        request_id=request.request_id, prompt_tokens=100, completion_tokens=30
    )
    # then it costs 100 × 1,500 + 30 × 2,250 microcredit-seconds and holds nothing
    finished.refresh_from_db()
    assert finished.status == ModelRequest.Status.FINISHED
    assert finished.cost_microcredits == 100 * 1_500 + 30 * 2_250
    assert finished.held_microcredits == 0
    assert (finished.prompt_tokens, finished.completion_tokens) == (100, 30)
    assert finished.finished_at is not None


def test_a_second_finish_changes_nothing(org_account, model, key):
    fund(org_account, 10)
    request = hold(org_account, model, key, 2 * M)
    request_finish(request_id=request.request_id, prompt_tokens=10, completion_tokens=5)
    before = requests_snapshot()
    again = request_finish(request_id=request.request_id, prompt_tokens=500, completion_tokens=9)
    assert (again.prompt_tokens, again.completion_tokens) == (10, 5)
    assert requests_snapshot() == before


def test_a_failure_that_produced_nothing_is_free(org_account, model, key):
    fund(org_account, 10)
    request = hold(org_account, model, key, 2 * M)
    request_finish(
        request_id=request.request_id,
        prompt_tokens=0,
        completion_tokens=0,
        error_code="upstream_error",
    )
    request.refresh_from_db()
    assert request.status == ModelRequest.Status.FREE
    assert (request.cost_microcredits, request.held_microcredits) == (0, 0)
    assert request.error_code == "upstream_error"


def test_a_stream_dropped_half_way_is_charged_for_what_it_produced(org_account, model, key):
    fund(org_account, 10)
    request = hold(org_account, model, key, 2 * M)
    request_finish(
        request_id=request.request_id,
        prompt_tokens=20,
        completion_tokens=7,
        error_code="client_disconnected",
    )
    request.refresh_from_db()
    assert request.status == ModelRequest.Status.FINISHED
    assert request.cost_microcredits == 20 * 1_500 + 7 * 2_250


@pytest.mark.parametrize(
    ("prompt", "completion"),
    [(-1, 0), (0, -5), (1.5, 0), ("3", 0), (True, 0), (2**31, 0), (512 * 2048, 1)],
)
def test_bad_token_counts_are_refused_and_change_nothing(
    org_account, model, key, prompt, completion
):
    fund(org_account, 10)
    request = hold(org_account, model, key, 2 * M)
    before = requests_snapshot()
    with pytest.raises(UsageError):
        request_finish(
            request_id=request.request_id, prompt_tokens=prompt, completion_tokens=completion
        )
    assert requests_snapshot() == before


def test_finishing_an_unknown_request_is_refused():
    with pytest.raises(UsageError):
        request_finish(request_id="nope", prompt_tokens=1, completion_tokens=1)
    with pytest.raises(UsageError):
        request_release(request_id="nope", error_code="x")


def test_release_frees_the_hold_and_is_idempotent(org_account, model, key):
    # given an account whose whole balance is held by one request
    fund(org_account, 1)
    request = hold(org_account, model, key, M)
    with pytest.raises(QuotaExceeded):
        hold(org_account, model, key, 1)
    # when the request is released (nothing produced)
    request_release(request_id=request.request_id, error_code="no_replica")
    request.refresh_from_db()
    assert request.status == ModelRequest.Status.FREE
    assert request.held_microcredits == 0
    # then the balance is free to hold again, and a late finish or release changes nothing
    assert hold(org_account, model, key, M).status == ModelRequest.Status.RUNNING
    request_finish(request_id=request.request_id, prompt_tokens=5, completion_tokens=5)
    request_release(request_id=request.request_id, error_code="other")
    request.refresh_from_db()
    assert (request.status, request.cost_microcredits, request.error_code) == (
        ModelRequest.Status.FREE,
        0,
        "no_replica",
    )


def test_embeddings_are_priced_on_input_only(org_account, key):
    embed = served_model(task="embedding", input_price=Decimal("0.020"), output_price=Decimal("0"))
    fund(org_account, 1)
    request = hold(org_account, embed, key, 10_000, endpoint=ModelRequest.Endpoint.EMBEDDINGS)
    done = request_finish(request_id=request.request_id, prompt_tokens=37, completion_tokens=0)
    assert done.cost_microcredits == 37 * 20


# --- Who pays: the attacker's side -------------------------------------------------------------


def test_a_personal_key_never_spends_its_owners_organisation(model, student, student_account):
    # given a student who is also a member of a funded organisation, and a personal key
    organisation = OrganisationFactory()
    MembershipFactory(organisation=organisation, user=student)
    organisation_account = account_for_organisation(organisation)
    fund(organisation_account, 100)
    fund(student_account, 1)
    key = personal_key(student)
    # when the personal key's request names the organisation's account
    with pytest.raises(PermissionDenied):
        hold(organisation_account, model, key, M)
    # then nothing is held there; the student's own account pays
    assert ModelRequest.objects.count() == 0
    assert hold(student_account, model, key, M).account == student_account


def test_an_organisation_key_never_spends_another_organisation(org_account, model, key):
    other = account_for_organisation(OrganisationFactory())
    fund(other, 100)
    with pytest.raises(PermissionDenied):
        hold(other, model, key, M)
    assert ModelRequest.objects.count() == 0


def test_the_playground_pays_from_own_account_or_an_organisation_one_belongs_to(
    model, student, student_account
):
    mine = OrganisationFactory()
    MembershipFactory(organisation=mine, user=student)
    mine_account = account_for_organisation(mine)
    theirs_account = account_for_organisation(OrganisationFactory())
    for account in (student_account, mine_account, theirs_account):
        fund(account, 5)
    assert hold(student_account, model, None, M, user=student).account == student_account
    assert hold(mine_account, model, None, M, user=student).account == mine_account
    with pytest.raises(PermissionDenied):
        hold(theirs_account, model, None, M, user=student)
    with pytest.raises(PermissionDenied):
        hold(student_account, model, None, M)  # neither key nor person
    assert ModelRequest.objects.filter(account=theirs_account).count() == 0


def test_a_hold_left_behind_by_a_dead_worker_is_released_after_an_hour(org_account, model, key):
    import datetime as dt

    from django.utils import timezone

    from inference.usage.services import requests_abandoned_release
    from inference.usage.tasks import model_charges_post_task

    # given the whole balance held by a request whose worker died, and one just started
    fund(org_account, 2)
    old = hold(org_account, model, key, M)
    ModelRequest.objects.filter(pk=old.pk).update(
        started_at=timezone.now() - dt.timedelta(hours=1, seconds=1)
    )
    recent = hold(org_account, model, key, M)
    with pytest.raises(QuotaExceeded):
        hold(org_account, model, key, 1)
    # when the posting task runs, then the old hold is released, uncharged, and the recent one
    # is left alone
    assert requests_abandoned_release(now=timezone.now() - dt.timedelta(seconds=5)) == 0
    model_charges_post_task.apply().get()
    old.refresh_from_db()
    recent.refresh_from_db()
    assert (old.status, old.held_microcredits, old.error_code) == ("free", 0, "abandoned")
    assert recent.status == ModelRequest.Status.RUNNING
    assert hold(org_account, model, key, M).status == ModelRequest.Status.RUNNING
    # and a late finish of the abandoned request changes nothing
    request_finish(request_id=old.request_id, prompt_tokens=10, completion_tokens=10)
    old.refresh_from_db()
    assert (old.status, old.cost_microcredits) == ("free", 0)
