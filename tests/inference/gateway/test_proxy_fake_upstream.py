"""The proxy core against a fake upstream (httpx's MockTransport in place of the shared client):
routing and retries before the first byte, engine errors normalised, a stream cut short, and
the books after each. The real engine is in test_openai_client.py."""

import asyncio
import json

import httpx
import pytest
from django.test import AsyncClient

from inference.deployments.models import Deployment, Replica
from inference.gateway import upstream
from inference.gateway.router import router
from inference.usage.models import ModelRequest

from .conftest import org_payer, served_model
from .test_router import FakeTarget

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

URL = "/llm/v1/chat/completions"


def _replica(deployment, name: str, *, state="ready") -> Replica:
    return Replica.objects.create(
        deployment=deployment, state=state, base_url=f"http://{name}.test/v1", api_key="engine-k"
    )


@pytest.fixture
def setup():
    model = served_model("fake-chat")
    deployment = Deployment.objects.create(model=model, gpus_per_replica=0, replicas_wanted=0)
    payer = org_payer()
    return model, deployment, payer


async def _settled(request_id: str) -> ModelRequest:
    """The request once its books closed (a plain answer's close just after it is sent)."""
    for _ in range(200):
        request = await ModelRequest.objects.aget(request_id=request_id)
        if request.status != ModelRequest.Status.RUNNING:
            return request
        await asyncio.sleep(0.025)
    raise AssertionError(f"{request_id} still running")


def _install(handler) -> None:
    """The gateway's shared client for this loop, answering through `handler`."""
    loop = asyncio.get_running_loop()
    upstream._clients[loop] = httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _completion(prompt=7, completion=3) -> dict:
    return {
        "id": "engine-id",
        "object": "chat.completion",
        "created": 1,
        "model": "anything",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": 10},
    }


def _post(client, payer, body) -> "asyncio.Future":
    return client.post(
        URL,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {payer.secret}"},
    )


BODY = {"model": "fake-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


async def test_a_failed_connect_is_retried_on_another_replica_and_reported(setup):
    # given two ready replicas, the first of which refuses connections
    model, deployment, payer = setup
    bad = await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://bad.test/v1", api_key="k"
    )
    good = await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://good.test/v1", api_key="k"
    )
    seen = []

    def handler(request: httpx.Request):
        seen.append(request.url.host)
        assert request.headers["Authorization"] == "Bearer k"
        if request.url.host == "bad.test":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=_completion())

    _install(handler)
    # when a request comes while the good one is the busier (so the bad one is tried first)
    router.outstanding[good.pk] += 1
    try:
        response = await _post(AsyncClient(), payer, BODY)
    finally:
        router.give_back(FakeTarget(good.pk))
    # then it was answered by the good one, and the bad one's failure was recorded
    assert response.status_code == 200
    assert seen == ["bad.test", "good.test"]
    await bad.arefresh_from_db()
    assert bad.health_failures >= 1
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-chat"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    request = await _settled(body["id"])
    assert request.status == ModelRequest.Status.FINISHED
    assert request.cost_microcredits == 7 * 1_000_000 + 3 * 2_000_000


async def test_a_5xx_before_the_first_byte_goes_to_another_replica(setup):
    model, deployment, payer = setup
    for name in ("one", "two"):
        await Replica.objects.acreate(
            deployment=deployment, state="ready", base_url=f"http://{name}.test/v1", api_key="k"
        )
    calls = []

    def handler(request):
        calls.append(request.url.host)
        if len(calls) == 1:
            return httpx.Response(500, json={"error": {"message": "/srv/engine.py exploded"}})
        return httpx.Response(200, json=_completion())

    _install(handler)
    response = await _post(AsyncClient(), payer, BODY)
    assert response.status_code == 200
    assert len(calls) == 2
    assert calls[0] != calls[1]


async def test_all_replicas_failing_is_a_502_that_charges_nothing(setup):
    model, deployment, payer = setup
    await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://one.test/v1", api_key="k"
    )

    def handler(request):
        return httpx.Response(500, text="Internal Server Error: pydantic at /srv/x.py")

    _install(handler)
    response = await _post(AsyncClient(), payer, BODY)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert "pydantic" not in error["message"]
    request = await ModelRequest.objects.aget()
    assert request.status == ModelRequest.Status.FREE
    assert request.cost_microcredits == 0


async def test_no_replica_up_is_a_503_that_writes_nothing(setup):
    model, deployment, payer = setup
    await Replica.objects.acreate(
        deployment=deployment, state="unhealthy", base_url="http://one.test/v1", api_key="k"
    )
    _install(lambda request: pytest.fail("no replica should be asked"))
    response = await _post(AsyncClient(), payer, BODY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert response["Retry-After"]
    assert not await ModelRequest.objects.aexists()


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 512 tokens",
                    "type": "invalid_request_error",
                    "code": "context_length_exceeded",
                }
            },
            "context_length_exceeded",
        ),
        (
            400,
            {"object": "error", "message": "bad /srv/vllm", "type": "BadRequestError", "code": 400},
            None,
        ),
        (404, {"detail": "Not Found"}, "model_not_found"),
    ],
)
async def test_an_engines_4xx_is_answered_in_our_words_and_charges_nothing(
    setup, status, payload, code
):
    model, deployment, payer = setup
    await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://one.test/v1", api_key="k"
    )
    _install(lambda request: httpx.Response(status, json=payload))
    response = await _post(AsyncClient(), payer, BODY)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "/srv" not in error["message"]
    request = await ModelRequest.objects.aget()
    assert request.status == ModelRequest.Status.FREE


def _sse(chunks: list[dict], *, done: bool) -> bytes:
    out = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _token(text: str) -> dict:
    return {
        "id": "e",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "x",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


async def _read(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


async def test_a_stream_cut_short_ends_with_an_error_event_and_charges_what_was_produced(setup):
    # given an engine that sends three tokens and stops without [DONE]; it cannot count tokens
    model, deployment, payer = setup
    await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://one.test/v1", api_key="k"
    )

    def handler(request):
        if request.url.path.endswith("/tokenize/count"):
            raise httpx.ConnectError("gone")
        body = json.loads(request.content)
        # the gateway always asks for usage
        assert body["stream_options"] == {"include_usage": True}
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=_sse([_token("a"), _token("b"), _token("c")], done=False),
        )

    _install(handler)
    response = await _post(AsyncClient(), payer, {**BODY, "stream": True})
    assert response.status_code == 200
    raw = await _read(response)
    events = [line[6:] for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
    # then three token chunks, then our error event
    assert len(events) == 5
    assert json.loads(events[3])["error"]["code"] == "upstream_error"
    assert events[4] == b"[DONE]"
    request = await ModelRequest.objects.aget()
    assert request.status == ModelRequest.Status.FINISHED
    assert request.completion_tokens == 3
    assert request.error_code == "upstream_error"


async def test_an_empty_200_stream_is_a_502_that_charges_nothing(setup):
    # llama.cpp's answer to an error inside a stream: 200 and no events (MODELS.md §7)
    model, deployment, payer = setup
    await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://one.test/v1", api_key="k"
    )
    _install(lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}))
    response = await _post(AsyncClient(), payer, {**BODY, "stream": True})
    assert response.status_code == 502
    request = await ModelRequest.objects.aget()
    assert request.status == ModelRequest.Status.FREE


async def test_an_unexpected_failure_is_an_openai_500_that_charges_nothing(setup, caplog):
    model, deployment, payer = setup
    await Replica.objects.acreate(
        deployment=deployment, state="ready", base_url="http://one.test/v1", api_key="k"
    )

    def handler(request):
        raise RuntimeError("a bug")

    _install(handler)
    marker = "secret-prompt-8812"
    body = {**BODY, "messages": [{"role": "user", "content": marker}]}
    response = await _post(AsyncClient(), payer, body)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    request = await ModelRequest.objects.aget()
    assert request.status == ModelRequest.Status.FREE
    assert marker not in caplog.text
