"""admit_and_lease: the window limits and a place in flight in one round trip to Redis, with
the same counts and refusals as requests_admit then lease_acquire (test_limits.py)."""

import asyncio
import time

import pytest

from inference.gateway import limits
from inference.gateway.errors import GatewayError
from inference.gateway.limits import Holder

pytestmark = pytest.mark.asyncio


async def _try(holder, tokens=1):
    try:
        return await limits.admit_and_lease(holder=holder, tokens=tokens)
    except GatewayError as exc:
        return exc


async def _counter(holder, what: str) -> int:
    window = int(time.time() // limits.WINDOW_SECONDS)
    key = f"{limits._prefix()}:key:{holder.key}:{window}:{what}"
    return int(await limits._redis().get(key) or 0)


async def test_a_burst_stops_exactly_at_the_requests_limit(settings):
    # given a key allowed 10 requests a minute
    settings.LLM_KEY_REQUESTS_PER_MINUTE = 10
    holder = Holder(key=f"al-{time.time_ns()}", organisation=None)
    # when 50 arrive at once
    results = await asyncio.gather(*(_try(holder) for _ in range(50)))
    refused = [r for r in results if isinstance(r, GatewayError)]
    # then exactly 10 pass, each with a lease; the refused took none
    assert len(refused) == 40
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    assert await limits.leases_count(holder=holder) == [10]
    await limits.redis_close()


async def test_a_full_flight_refuses_counts_the_request_and_gives_its_tokens_back(settings):
    # given a key allowed 2 requests in flight
    settings.LLM_KEY_CONCURRENT_STREAMS = 2
    holder = Holder(key=f"al-{time.time_ns()}", organisation=None)
    assert not isinstance(await _try(holder, 100), GatewayError)
    assert not isinstance(await _try(holder, 100), GatewayError)
    # when a third comes while both run
    refused = await _try(holder, 100)
    # then it is refused for the flight, counted as a request, its tokens not counted
    assert isinstance(refused, GatewayError)
    assert "in flight" in refused.message
    assert await _counter(holder, "requests") == 3
    assert await _counter(holder, "tokens") == 200
    assert await limits.leases_count(holder=holder) == [2]
    await limits.redis_close()


async def test_a_request_refused_by_its_organisations_window_counts_nowhere(settings):
    # given an organisation allowed one request a minute
    settings.LLM_ORGANISATION_REQUESTS_PER_MINUTE = 1
    org = f"alo-{time.time_ns()}"
    first, second = (
        Holder(key=f"a-{org}", organisation=org),
        Holder(key=f"b-{org}", organisation=org),
    )
    admission, lease = await _try(first)
    # when another key of it asks
    refused = await _try(second)
    # then it is refused by the organisation's limit, with no lease and nothing counted
    assert "organisation" in refused.message
    assert await _counter(second, "requests") == 0
    assert await limits.leases_count(holder=second) == [0, 1]
    # and a lease given back frees its place
    await limits.lease_release(lease)
    assert await limits.leases_count(holder=first) == [0, 0]
    await limits.redis_close()
