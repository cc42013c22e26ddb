"""End to end: the official openai client against the real portal (uvicorn) and the real
llama.cpp engines, registered as replicas. Every answer is checked against the books: what a
request was charged, and what the ledger took after posting."""

import base64
import json
import math
import struct
import time

import httpx
import openai
import pytest
from django.conf import settings as django_settings

from inference.catalogue.models import ServedModel
from inference.deployments.models import Deployment
from inference.usage.models import ModelRequest, RequestLogPolicy
from inference.usage.services import model_charges_post
from portal.apikeys.services import apikey_create, apikey_revoke
from portal.credits.models import CreditAccount
from portal.organisations.models import Role
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

from .conftest import FUNDS, deploy, org_payer, personal_payer, served_model

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Say hello to the national AI cloud."}]


def balance(account) -> int:
    return CreditAccount.objects.get(pk=account.pk).balance


def settled(request_id: str | None = None, *, timeout: float = 15) -> list[ModelRequest]:
    """The requests once none is RUNNING any more (a stream's books close just after its last
    byte, or after the client left)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ModelRequest.objects.all()
        if request_id:
            rows = rows.filter(request_id=request_id)
        rows = list(rows)
        if rows and all(r.status != ModelRequest.Status.RUNNING for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"requests still running: {rows}")
        time.sleep(0.05)


def priced(request: ModelRequest) -> int:
    # conftest's prices: 1 credit-second per prompt token, 2 per completion token
    return request.prompt_tokens + 2 * request.completion_tokens


# --- Models -------------------------------------------------------------------------------------


def test_models_lists_what_the_key_may_call_and_nothing_of_another_organisation(
    chat_model, embedding_model, payer, client_for
):
    # given a model offered only to the payer's organisation, and one only to another's
    mine = served_model("ours-only", visibility="organisation", organisation=payer.organisation)
    other = OrganisationFactory()
    served_model("theirs-only", visibility="organisation", organisation=other)
    # when the key lists the models
    ids = [m.id for m in client_for(payer.secret).models.list().data]
    # then it sees the public ones and its own, never the other organisation's
    assert ids == sorted([chat_model.name, embedding_model.name, mine.name])
    assert client_for(payer.secret).models.retrieve(chat_model.name).id == chat_model.name
    with pytest.raises(openai.NotFoundError):
        client_for(payer.secret).models.retrieve("theirs-only")


def test_another_organisations_key_can_neither_call_nor_see_a_model_offered_to_one(
    chat_model, llama_chat_engine, client_for
):
    # given a model offered only to organisation A, deployed and up
    owner_a = org_payer()
    private = served_model(
        "a-private", visibility="organisation", organisation=owner_a.organisation
    )
    deploy(private, llama_chat_engine)
    intruder = org_payer()
    client = client_for(intruder.secret)
    # when B's key lists and calls it, then it is as if it did not exist
    assert "a-private" not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="a-private", messages=HELLO, max_tokens=4)
    assert caught.value.body["code"] == "model_not_found"
    assert not ModelRequest.objects.exists()
    # while A's own key calls it
    answer = client_for(owner_a.secret).chat.completions.create(
        model="a-private", messages=HELLO, max_tokens=4
    )
    assert answer.model == "a-private"


# --- Chat and completions --------------------------------------------------------------------


def test_chat_is_answered_and_the_balance_falls_by_exactly_the_priced_tokens(
    chat_model, payer, client_for
):
    before = balance(payer.account)
    answer = client_for(payer.secret).chat.completions.create(
        model=chat_model.name, messages=HELLO, max_tokens=16, temperature=0, seed=1
    )
    assert answer.id.startswith("chatcmpl-")
    assert answer.model == chat_model.name
    assert answer.usage.completion_tokens <= 17  # llama.cpp may give max_tokens + 1
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    (request,) = settled(answer.id)
    assert request.status == ModelRequest.Status.FINISHED
    assert (request.prompt_tokens, request.completion_tokens) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    assert request.api_key_id == payer.key.pk
    assert request.account_id == payer.account.pk
    # and the engine's count of the prompt is its own tokenizer's
    # when the charges are posted
    model_charges_post()
    # then the ledger took exactly the priced tokens
    assert before - balance(payer.account) == priced(request)
    assert priced(request) > 0


def _stream_parts(stream) -> tuple[list, object]:
    chunks, usage = [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            chunks.append(chunk)
    return chunks, usage


def test_a_stream_reports_the_same_usage_as_the_plain_answer_and_one_token_per_chunk(
    chat_model, payer, client_for
):
    # given the same deterministic request, plain and streamed
    client = client_for(payer.secret)
    args = {
        "model": chat_model.name,
        "messages": HELLO,
        "max_tokens": 24,
        "temperature": 0,
        "seed": 3,
    }
    plain = client.chat.completions.create(**args)
    stream = client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    )
    chunks, usage = _stream_parts(stream)
    # then the usage the gateway made (llama.cpp sends none in streams) is the engine's own
    # count for the same request: prompt by its tokenizer, completion one token per chunk
    assert usage is not None
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert usage.completion_tokens == plain.usage.completion_tokens
    content_chunks = [c for c in chunks if c.choices[0].delta.content is not None]
    assert len(content_chunks) == usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-")
    (request,) = settled(chunks[0].id)
    assert (request.prompt_tokens, request.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert request.stream


def test_a_stream_without_include_usage_gets_no_usage_chunk_but_is_charged(
    chat_model, payer, client_for
):
    stream = client_for(payer.secret).chat.completions.create(
        model=chat_model.name, messages=HELLO, max_tokens=8, stream=True
    )
    chunks, usage = _stream_parts(stream)
    assert usage is None
    (request,) = settled(chunks[0].id)
    assert request.completion_tokens >= 1
    assert request.status == ModelRequest.Status.FINISHED


def test_completions_plain_and_streamed(chat_model, payer, client_for):
    client = client_for(payer.secret)
    plain = client.completions.create(
        model=chat_model.name, prompt="Once upon a time", max_tokens=10, temperature=0, seed=1
    )
    assert plain.id.startswith("cmpl-")
    assert plain.usage.completion_tokens <= 11
    stream = client.completions.create(
        model=chat_model.name,
        prompt="Once upon a time",
        max_tokens=10,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert usage.completion_tokens == plain.usage.completion_tokens
    requests = settled()
    assert len(requests) == 2
    assert {r.endpoint for r in requests} == {"completions"}


# --- Embeddings --------------------------------------------------------------------------------


def test_embeddings_base64_and_float_are_the_same_unit_vectors(embedding_model, payer, client_for):
    client = client_for(payer.secret)
    texts = ["The cat sat on the mat.", "A feline rested on the rug."]
    # the openai client asks for base64 unless told otherwise, and decodes it
    default = client.embeddings.create(model=embedding_model.name, input=texts)
    floats = client.embeddings.create(
        model=embedding_model.name, input=texts, encoding_format="float"
    )
    assert len(default.data) == 2
    for a, b in zip(default.data, floats.data, strict=True):
        assert len(a.embedding) == 384
        assert math.isclose(math.sqrt(sum(v * v for v in a.embedding)), 1.0, rel_tol=1e-5)
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-6
    assert default.usage.prompt_tokens > 0
    # the raw base64 is little-endian float32, as OpenAI's
    raw = httpx.post(
        str(client.base_url) + "embeddings",
        json={"model": embedding_model.name, "input": "hello", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {payer.secret}"},
        timeout=30,
    ).json()
    vector = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)
    requests = settled()
    assert {r.endpoint for r in requests} == {"embeddings"}
    assert all(r.completion_tokens == 0 for r in requests)


def test_chat_on_an_embedding_model_and_embeddings_on_a_chat_model_are_refused(
    chat_model, embedding_model, payer, client_for
):
    client = client_for(payer.secret)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=embedding_model.name, messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=chat_model.name, input="x")
    assert not ModelRequest.objects.exists()


# --- Errors -------------------------------------------------------------------------------------


def _raw(gateway_server, path, *, secret=None, content=None, json_body=None, headers=None):
    all_headers = dict(headers or {})
    if secret:
        all_headers["Authorization"] = f"Bearer {secret}"
    return httpx.post(
        f"{gateway_server}/llm/v1/{path}",
        content=content,
        json=json_body,
        headers=all_headers,
        timeout=30,
    )


def _is_openai_error(response, status: int, code) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


def test_a_missing_or_wrong_key_is_401_invalid_api_key(chat_model, payer, gateway_server):
    body = {"model": chat_model.name, "messages": HELLO}
    _is_openai_error(
        _raw(gateway_server, "chat/completions", json_body=body), 401, "invalid_api_key"
    )
    wrong = payer.secret[:-4] + "abcd"
    _is_openai_error(
        _raw(gateway_server, "chat/completions", json_body=body, secret=wrong),
        401,
        "invalid_api_key",
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{gateway_server}/llm/v1", api_key="nac_nonsense", max_retries=0
        ).models.list()
    assert not ModelRequest.objects.exists()


def test_a_revoked_key_is_refused_from_the_next_request(chat_model, payer, client_for):
    client = client_for(payer.secret)
    client.chat.completions.create(model=chat_model.name, messages=HELLO, max_tokens=2)
    apikey_revoke(key=payer.key, acting_user=payer.owner)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=chat_model.name, messages=HELLO, max_tokens=2)
    assert ModelRequest.objects.count() == 1


def test_a_key_without_the_scope_is_403(chat_model, client_for):
    reader = org_payer(scopes=("credits:read",))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(reader.secret).chat.completions.create(
            model=chat_model.name, messages=HELLO, max_tokens=2
        )
    assert caught.value.status_code == 403
    assert not ModelRequest.objects.exists()


def test_an_unknown_model_is_404_model_not_found(chat_model, payer, client_for):
    with pytest.raises(openai.NotFoundError) as caught:
        client_for(payer.secret).chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=2
        )
    assert caught.value.body["code"] == "model_not_found"
    assert not ModelRequest.objects.exists()


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_beyond_the_context_is_400_context_length_exceeded(
    chat_model, payer, client_for, stream
):
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(payer.secret).chat.completions.create(
            model=chat_model.name, messages=HELLO, max_tokens=600, stream=stream
        )
    assert caught.value.body["code"] == "context_length_exceeded"
    assert not ModelRequest.objects.exists()


def test_a_prompt_that_fits_only_by_the_engines_count_is_accepted(chat_model, payer, client_for):
    # 60 words: its byte length (the gateway's first bound) plus max_tokens passes 512, its
    # tokens do not: the gateway asks the engine's tokenizer before refusing
    words = " ".join(["the"] * 60)
    answer = client_for(payer.secret).chat.completions.create(
        model=chat_model.name,
        messages=[{"role": "user", "content": words}],
        max_tokens=512 - 200,
    )
    assert answer.usage.prompt_tokens + 312 <= 512


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": HELLO}).encode(), "model"),
        (
            json.dumps({"model": "tiny-chat", "messages": HELLO, "max_tokens": "ten"}).encode(),
            "max_tokens",
        ),
        (
            json.dumps({"model": "tiny-chat", "messages": HELLO, "max_tokens": -5}).encode(),
            "max_tokens",
        ),
        (json.dumps({"model": "tiny-chat", "messages": "hi"}).encode(), "messages"),
        (json.dumps({"model": "tiny-chat", "messages": HELLO, "n": 3}).encode(), "n"),
        (json.dumps({"model": "tiny-chat", "messages": HELLO, "bogus": 1}).encode(), "bogus"),
        (
            json.dumps({"model": "tiny-chat", "messages": HELLO, "temperature": 9}).encode(),
            "temperature",
        ),
    ],
)
def test_malformed_bodies_are_400_invalid_request_error_and_change_nothing(
    chat_model, payer, gateway_server, content, param
):
    response = _raw(
        gateway_server,
        "chat/completions",
        content=content,
        secret=payer.secret,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert not ModelRequest.objects.exists()


def test_an_oversized_body_is_413_before_it_is_read(chat_model, payer, gateway_server, settings):
    settings.LLM_MAX_REQUEST_BYTES = 2000
    big = json.dumps(
        {"model": chat_model.name, "messages": [{"role": "user", "content": "x" * 5000}]}
    ).encode()
    response = _raw(
        gateway_server,
        "chat/completions",
        content=big,
        secret=payer.secret,
        headers={"content-type": "application/json"},
    )
    _is_openai_error(response, 413, "request_too_large")

    # and without a Content-Length (chunked), refused as the bytes arrive
    def chunks():
        yield big[:1000]
        yield big[1000:]

    response = _raw(gateway_server, "chat/completions", content=chunks(), secret=payer.secret)
    _is_openai_error(response, 413, "request_too_large")
    assert not ModelRequest.objects.exists()


def test_requests_per_minute_are_limited_with_retry_after(chat_model, payer, client_for, settings):
    settings.LLM_KEY_REQUESTS_PER_MINUTE = 2
    client = client_for(payer.secret)
    for _ in range(2):
        client.chat.completions.create(model=chat_model.name, messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=chat_model.name, messages=HELLO, max_tokens=2)
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 61
    assert ModelRequest.objects.count() == 2


def test_tokens_per_minute_count_the_most_a_request_may_use(
    chat_model, payer, client_for, settings
):
    settings.LLM_KEY_TOKENS_PER_MINUTE = 400
    client = client_for(payer.secret)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=chat_model.name, messages=HELLO, max_tokens=350)
    client.chat.completions.create(model=chat_model.name, messages=HELLO, max_tokens=8)
    assert ModelRequest.objects.count() == 1


def test_an_account_that_cannot_cover_the_maximum_cost_is_429_insufficient_quota(
    chat_model, client_for
):
    poor = org_payer(funds=100)  # 100 credit-seconds; 90 completion tokens alone cost 180
    before = balance(poor.account)
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(poor.secret).chat.completions.create(
            model=chat_model.name, messages=HELLO, max_tokens=90
        )
    assert caught.value.body["code"] == "insufficient_quota"
    assert caught.value.body["type"] == "insufficient_quota"
    assert not ModelRequest.objects.exists()
    assert balance(poor.account) == before


def test_a_students_personal_key_cannot_spend_the_organisations_credits(chat_model, client_for):
    # given a funded organisation, and a member of it with a personal key and no credits
    organisation_payer = org_payer()
    student = UserFactory()
    MembershipFactory(organisation=organisation_payer.organisation, user=student, role=Role.MEMBER)
    mine = personal_payer(student, funds=0)
    before = balance(organisation_payer.account)
    # when the personal key calls a model
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(mine.secret).chat.completions.create(
            model=chat_model.name, messages=HELLO, max_tokens=4
        )
    # then it is refused for its own (empty) account, and the organisation pays nothing
    assert caught.value.body["code"] == "insufficient_quota"
    assert not ModelRequest.objects.exists()
    assert balance(organisation_payer.account) == before


def test_a_personal_key_pays_from_the_persons_own_account(chat_model, client_for):
    mine = personal_payer()
    answer = client_for(mine.secret).chat.completions.create(
        model=chat_model.name, messages=HELLO, max_tokens=4
    )
    (request,) = settled(answer.id)
    assert request.account_id == mine.account.pk
    assert request.user_id == mine.owner.pk


def test_no_replica_up_is_503_with_a_clear_message(payer, client_for, transactional_db):
    lonely = served_model("lonely-chat")
    Deployment.objects.create(model=lonely, gpus_per_replica=0, replicas_wanted=1)
    with pytest.raises(openai.InternalServerError) as caught:
        client_for(payer.secret).chat.completions.create(
            model="lonely-chat", messages=HELLO, max_tokens=4
        )
    assert caught.value.status_code == 503
    assert "no replica" in caught.value.body["message"]
    assert not ModelRequest.objects.exists()


# --- Streams that end early ---------------------------------------------------------------------


def test_a_stream_the_client_drops_halfway_is_cancelled_upstream_and_charged_for_what_was_made(
    payer, client_for, counting_proxy, transactional_db
):
    # given the chat model reached through a counting proxy
    model = served_model("watched-chat")
    deploy(model, counting_proxy)
    before_connections = len(counting_proxy.connections)
    stream = client_for(payer.secret).chat.completions.create(
        model="watched-chat", messages=HELLO, max_tokens=450, stream=True
    )
    # when the client reads five chunks and leaves
    received = []
    for chunk in stream:
        received.append(chunk)
        if len(received) == 5:
            break
    stream.close()
    (request,) = settled()
    # then the request is charged for what the engine produced before it was stopped
    assert request.error_code == "client_disconnected"
    assert request.status == ModelRequest.Status.FINISHED
    assert 4 <= request.completion_tokens < 450
    assert request.prompt_tokens > 0
    # and the gateway closed its connection to the engine before the engine's [DONE]
    # (the stream's connection is the first the gateway opened to the proxy in this test)
    record = counting_proxy.connections[before_connections]
    deadline = time.monotonic() + 10
    while record.closed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.closed_by_gateway
    assert not record.saw_done
    model_charges_post()
    assert FUNDS - balance(payer.account) == priced(request)


def _read_and_kill(stream, pid: int, *, after: int) -> int:
    import os
    import signal

    got = 0
    for _chunk in stream:
        got += 1
        if got == after:
            os.kill(pid, signal.SIGKILL)
    return got


def test_an_engine_that_dies_mid_stream_ends_the_stream_with_an_error_and_charges_what_it_made(
    payer, client_for, model_store, tmp_path, transactional_db
):
    from tests.inference.conftest import engine_start

    # given a throwaway engine of our own
    engine, process = engine_start(
        model_path=model_store / "starter/tiny-chat.gguf",
        alias="doomed-chat",
        workdir=tmp_path,
        extra_args=("--n_threads", "1", "--verbose", "false"),
    )
    try:
        model = served_model("doomed-chat")
        deploy(model, engine)
        stream = client_for(payer.secret).chat.completions.create(
            model="doomed-chat", messages=HELLO, max_tokens=470, stream=True
        )
        # when the engine is killed after the first chunks arrived
        with pytest.raises(openai.APIError) as caught:
            _read_and_kill(stream, engine.pid, after=2)
        # then the client gets the gateway's error event, not a silent end
        assert "stopped in the middle" in caught.value.message
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    (request,) = settled()
    assert request.error_code == "upstream_error"
    assert request.status == ModelRequest.Status.FINISHED
    assert 1 <= request.completion_tokens < 470


# --- Nothing kept -------------------------------------------------------------------------------


def test_nothing_of_the_prompt_or_answer_is_logged_or_kept_unless_opted_in(
    chat_model, payer, client_for, caplog
):
    marker = "zebra-quartz-4471"
    caplog.set_level("DEBUG")
    client = client_for(payer.secret)
    client.chat.completions.create(
        model=chat_model.name, messages=[{"role": "user", "content": marker}], max_tokens=4
    )
    list(
        client.chat.completions.create(
            model=chat_model.name,
            messages=[{"role": "user", "content": marker}],
            max_tokens=4,
            stream=True,
        )
    )
    settled()
    assert marker not in caplog.text
    assert not RequestLogPolicy.objects.exists()
    from inference.usage.models import RequestLog

    assert not RequestLog.objects.exists()
    # once the organisation opts in, its requests are kept
    RequestLogPolicy.objects.create(organisation=payer.organisation, retention_days=7)
    client.chat.completions.create(
        model=chat_model.name, messages=[{"role": "user", "content": marker}], max_tokens=4
    )
    settled()
    log = RequestLog.objects.get()
    assert marker in json.dumps(log.request_body)


# --- Concurrency --------------------------------------------------------------------------------


def test_100_concurrent_streams_under_a_limit_of_20_never_exceed_it_and_the_books_hold(
    payer, counting_proxy, gateway_server, settings, transactional_db
):
    import asyncio

    settings.LLM_KEY_CONCURRENT_STREAMS = 20
    model = served_model("crowded-chat")
    deploy(model, counting_proxy)
    before = balance(payer.account)

    async def one(client):
        async with client.stream(
            "POST",
            f"{gateway_server}/llm/v1/chat/completions",
            json={"model": "crowded-chat", "messages": HELLO, "max_tokens": 200, "stream": True},
            headers={"Authorization": f"Bearer {payer.secret}"},
        ) as response:
            body = await response.aread()
            return response.status_code, body

    async def crowd():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(client) for _ in range(100)))

    results = asyncio.run(crowd())
    statuses = [status for status, _ in results]
    ok = statuses.count(200)
    refused = [body for status, body in results if status == 429]
    # then every request was either served or refused with the limit's 429
    assert ok + len(refused) == 100
    assert ok >= 20
    assert refused
    assert all(json.loads(body)["error"]["code"] == "rate_limit_exceeded" for body in refused)
    # and the engine never had more than 20 of them at once, and had 20 at some point
    assert counting_proxy.most_generating == 20
    # and the books: one finished request per stream served, none for the refused
    requests = settled(timeout=60)
    assert len(requests) == ok
    assert all(r.status == ModelRequest.Status.FINISHED for r in requests)
    assert all(b"[DONE]" in body for status, body in results if status == 200)
    model_charges_post()
    assert before - balance(payer.account) == sum(priced(r) for r in requests)


def test_a_request_keeps_its_place_in_flight_while_the_engine_keeps_it_waiting(
    payer, counting_proxy, gateway_server, settings, monkeypatch, transactional_db
):
    # given one place in flight per key, leases of 0.5 s renewed every 0.1 s, and an engine
    # that answers only after 1.2 s (a queued request: not a byte meanwhile)
    import threading

    from inference.gateway import limits

    settings.LLM_KEY_CONCURRENT_STREAMS = 1
    monkeypatch.setattr(limits, "LEASE_SECONDS", 0.5)
    monkeypatch.setattr(limits, "LEASE_RENEW_SECONDS", 0.1)
    counting_proxy.delay_answers_seconds = 1.2
    deploy(served_model("queued-chat"), counting_proxy)
    body = {"model": "queued-chat", "messages": HELLO, "max_tokens": 2}
    first = {}
    thread = threading.Thread(
        target=lambda: first.update(
            response=_raw(gateway_server, "chat/completions", json_body=body, secret=payer.secret)
        )
    )
    thread.start()
    time.sleep(0.8)  # past the first lease's term
    # when a second request comes while the first still waits
    second = _raw(gateway_server, "chat/completions", json_body=body, secret=payer.secret)
    thread.join(timeout=30)
    # then it is refused: the first still holds its place; and the first is answered
    _is_openai_error(second, 429, "rate_limit_exceeded")
    assert first["response"].status_code == 200


# --- The playground -----------------------------------------------------------------------------


def _session(user, gateway_server) -> httpx.Client:
    from django.test import Client

    django_client = Client()
    django_client.force_login(user)
    client = httpx.Client(base_url=gateway_server, timeout=60)
    name = django_settings.SESSION_COOKIE_NAME
    client.cookies.set(name, django_client.cookies[name].value)
    client.cookies.set("csrftoken", "a" * 32)
    return client


def test_the_playground_streams_and_ends_with_usage_cost_and_request_id(chat_model, gateway_server):
    person = personal_payer()
    client = _session(person.owner, gateway_server)
    response = client.post(
        "/models/playground/chat",
        json={"model": chat_model.name, "messages": HELLO, "max_tokens": 6},
        headers={"X-CSRFToken": "a" * 32},
    )
    assert response.status_code == 200, response.text
    events = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    (request,) = settled(last["request_id"])
    assert last["usage"]["completion_tokens"] == request.completion_tokens
    assert last["cost_credit_seconds"] == str(priced(request))
    assert request.account_id == person.account.pk
    assert request.api_key_id is None


def test_the_playground_needs_a_session_and_the_csrf_token(chat_model, gateway_server):
    body = {"model": chat_model.name, "messages": HELLO, "max_tokens": 2}
    anonymous = httpx.post(f"{gateway_server}/models/playground/chat", json=body, timeout=30)
    assert anonymous.status_code in (401, 403)
    person = personal_payer()
    client = _session(person.owner, gateway_server)
    no_token = client.post("/models/playground/chat", json=body)
    assert no_token.status_code == 403
    assert not ModelRequest.objects.exists()


def test_the_playground_cannot_spend_an_organisation_the_person_does_not_belong_to(
    chat_model, gateway_server
):
    victim = org_payer()
    person = personal_payer()
    client = _session(person.owner, gateway_server)
    response = client.post(
        "/models/playground/chat",
        json={
            "model": chat_model.name,
            "messages": HELLO,
            "max_tokens": 2,
            "organisation": str(victim.organisation.public_id),
        },
        headers={"X-CSRFToken": "a" * 32},
    )
    assert response.status_code == 404
    # nor one named by something that is not an id at all
    response = client.post(
        "/models/playground/chat",
        json={"model": chat_model.name, "messages": HELLO, "organisation": "not-a-uuid"},
        headers={"X-CSRFToken": "a" * 32},
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "organisation"
    assert not ModelRequest.objects.exists()
    assert balance(victim.account) == FUNDS


def test_an_organisation_key_made_by_one_owner_keeps_working_for_its_organisation(
    chat_model, client_for
):
    # a sanity check of the payer fixture itself: the key is the organisation's, not the owner's
    payer = org_payer()
    answer = client_for(payer.secret).chat.completions.create(
        model=chat_model.name, messages=HELLO, max_tokens=2
    )
    (request,) = settled(answer.id)
    assert request.account_id == payer.account.pk
    assert request.user_id is None
    assert isinstance(chat_model, ServedModel)
    key, secret = apikey_create(
        name="second",
        scopes=["models:invoke"],
        acting_user=payer.owner,
        organisation=payer.organisation,
    )
    assert client_for(secret).models.list().data
