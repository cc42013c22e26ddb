"""The gateway remembers who a key is between requests (callers.py, under the keys' generation
in Redis: portal.apikeys.keycache) and forgets it the moment what it was decided from changes:
a revoked key, a key's scopes, the person who answers for an organisation's key, an organisation
suspended, a logging opt-in. Against a fake upstream (httpx's MockTransport)."""

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from inference.deployments.models import Deployment, Replica
from inference.gateway import callers, upstream
from inference.usage.models import ModelRequest, RequestLogPolicy
from portal.apikeys.models import ApiKey
from portal.apikeys.services import apikey_create, apikey_revoke
from portal.organisations.models import Role
from portal.organisations.services import membership_remove
from tests.factories import MembershipFactory

from .conftest import org_payer, served_model

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

URL = "/llm/v1/chat/completions"
BODY = {"model": "cached-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def _completion() -> dict:
    return {
        "id": "engine-id",
        "object": "chat.completion",
        "created": 1,
        "model": "anything",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


@pytest.fixture
def engine_seen():
    """A ready replica of `cached-chat` whose engine is a fake; what reached it."""
    model = served_model("cached-chat")
    deployment = Deployment.objects.create(model=model, gpus_per_replica=0, replicas_wanted=0)
    Replica.objects.create(
        deployment=deployment, state="ready", base_url="http://cached.test/v1", api_key="e"
    )
    return []


@pytest.fixture
def reads(monkeypatch):
    """How many times the gateway read a key's caller from the database."""
    count = {"n": 0}
    read = callers.caller_for_key

    def counted(**kwargs):
        count["n"] += 1
        return read(**kwargs)

    monkeypatch.setattr(callers, "caller_for_key", counted)
    callers.callers_forget()
    yield count
    callers.callers_forget()


def _engine(seen: list) -> None:
    def handler(request: httpx.Request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_completion())

    upstream._clients[asyncio.get_running_loop()] = httpx.AsyncClient(
        transport=httpx.MockTransport(handler)
    )


async def _post(secret: str):
    return await AsyncClient().post(
        URL,
        data=json.dumps(BODY),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )


async def _warm(secret: str, reads: dict) -> None:
    """Two answered requests, the second from what the gateway remembered."""
    for _ in range(2):
        response = await _post(secret)
        assert response.status_code == 200, response.content
    assert reads["n"] == 1


async def _requests_of(key) -> int:
    return await ModelRequest.objects.filter(api_key=key).acount()


async def test_a_key_revoked_between_two_requests_is_refused_on_the_next(engine_seen, reads):
    # given an organisation's key the gateway remembers
    payer = await sync_to_async(org_payer)()
    _engine(engine_seen)
    await _warm(payer.secret, reads)
    assert await _requests_of(payer.key) == 2
    # when its owner revokes it
    await sync_to_async(apikey_revoke)(key=payer.key, acting_user=payer.owner)
    # then the very next request is refused, read afresh, and nothing reached the engine or
    # the books
    response = await _post(payer.secret)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert reads["n"] == 2
    assert len(engine_seen) == 2
    assert await _requests_of(payer.key) == 2


async def test_a_key_whose_scope_is_taken_away_is_refused_on_the_next_request(engine_seen, reads):
    # given a remembered key
    payer = await sync_to_async(org_payer)()
    _engine(engine_seen)
    await _warm(payer.secret, reads)
    # when its scopes no longer include models:invoke
    key = await ApiKey.objects.aget(pk=payer.key.pk)
    key.scopes = ["profile:read"]
    await key.asave(update_fields=["scopes"])
    # then the next request is refused for its scope
    response = await _post(payer.secret)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"
    assert len(engine_seen) == 2
    assert await _requests_of(payer.key) == 2


async def test_a_key_stops_once_the_admin_who_answers_for_it_is_removed(engine_seen, reads):
    # given an organisation's key made by an admin, remembered by the gateway
    payer = await sync_to_async(org_payer)()
    admin = await sync_to_async(MembershipFactory)(organisation=payer.organisation, role=Role.ADMIN)
    key, secret = await sync_to_async(apikey_create)(
        name="admin's", scopes=["models:invoke"], acting_user=admin.user,
        organisation=payer.organisation,
    )  # fmt: skip
    _engine(engine_seen)
    await _warm(secret, reads)
    # when the owner removes the admin
    await sync_to_async(membership_remove)(membership=admin, acting_user=payer.owner)
    # then the key is refused from the next request on
    response = await _post(secret)
    assert response.status_code == 401
    assert len(engine_seen) == 2
    assert await _requests_of(key) == 2


async def test_a_suspended_organisations_key_is_refused_on_the_next_request(engine_seen, reads):
    # given a remembered key
    payer = await sync_to_async(org_payer)()
    _engine(engine_seen)
    await _warm(payer.secret, reads)
    # when its organisation is suspended
    organisation = payer.organisation
    organisation.is_active = False
    await organisation.asave()
    # then
    response = await _post(payer.secret)
    assert response.status_code == 401
    assert len(engine_seen) == 2


async def test_an_opt_in_to_logging_reaches_the_next_request(engine_seen, reads):
    # given a remembered key of an organisation that keeps no content
    payer = await sync_to_async(org_payer)()
    _engine(engine_seen)
    await _warm(payer.secret, reads)
    # when the organisation opts in
    await RequestLogPolicy.objects.acreate(organisation=payer.organisation, retention_days=7)
    # then the next request is read afresh, and its content kept
    response = await _post(payer.secret)
    assert response.status_code == 200
    assert reads["n"] == 2
    for _ in range(200):
        request = await ModelRequest.objects.aget(request_id=response.json()["id"])
        if request.status != ModelRequest.Status.RUNNING:
            break
        await asyncio.sleep(0.025)
    assert await ModelRequest.objects.filter(pk=request.pk, log__isnull=False).aexists()


async def test_remembered_requests_write_the_keys_last_use_once(engine_seen, reads):
    # given a key used for the first time
    payer = await sync_to_async(org_payer)()
    _engine(engine_seen)
    await _warm(payer.secret, reads)
    first = (await ApiKey.objects.aget(pk=payer.key.pk)).last_used_at
    assert first is not None
    # when it is used again within the minute
    for _ in range(3):
        assert (await _post(payer.secret)).status_code == 200
    # then nothing more was written
    assert (await ApiKey.objects.aget(pk=payer.key.pk)).last_used_at == first
    assert reads["n"] == 1
