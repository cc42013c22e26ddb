"""The limits in real Redis: one atomic script per decision, so a burst stops exactly at a
limit; leases that lapse when a worker dies; tokens given back after the engine's count."""

import asyncio
import time

import pytest

from inference.gateway import limits
from inference.gateway.errors import GatewayError
from inference.gateway.limits import Holder

pytestmark = pytest.mark.asyncio


async def _admit(holder, tokens=1):
    try:
        await limits.requests_admit(holder=holder, tokens=tokens)
    except GatewayError as exc:
        return exc
    return None


async def test_a_burst_stops_exactly_at_the_requests_limit(settings):
    # given a key allowed 10 requests a minute
    settings.LLM_KEY_REQUESTS_PER_MINUTE = 10
    holder = Holder(key=f"k-{time.time_ns()}", organisation=None)
    # when 50 requests arrive at once
    results = await asyncio.gather(*(_admit(holder) for _ in range(50)))
    refused = [r for r in results if r is not None]
    # then exactly 10 pass, the rest are told when to come back
    assert len(refused) == 40
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    assert all(1 <= int(r.headers["Retry-After"]) <= 61 for r in refused)
    await limits.redis_close()


async def test_a_refused_request_counts_against_no_limit(settings):
    # given an organisation allowed 3 requests, and two keys of it
    settings.LLM_ORGANISATION_REQUESTS_PER_MINUTE = 3
    settings.LLM_KEY_REQUESTS_PER_MINUTE = 2
    org = f"o-{time.time_ns()}"
    first, second = (
        Holder(key=f"a-{org}", organisation=org),
        Holder(key=f"b-{org}", organisation=org),
    )
    # when the first key passes its own limit
    assert await _admit(first) is None
    assert await _admit(first) is None
    assert (await _admit(first)).code == "rate_limit_exceeded"  # the key's, not counted for org
    # then the organisation still has one left for the other key, and then none
    assert await _admit(second) is None
    refused = await _admit(second)
    assert "organisation" in refused.message
    await limits.redis_close()


async def test_tokens_are_counted_at_most_and_given_back_after(settings):
    settings.LLM_KEY_TOKENS_PER_MINUTE = 1000
    holder = Holder(key=f"t-{time.time_ns()}", organisation=None)
    admission = await limits.requests_admit(holder=holder, tokens=900)
    assert (await _admit(holder, tokens=200)).code == "rate_limit_exceeded"
    # when the engine says it used 100 of the 900
    await limits.tokens_settle(admission=admission, tokens_used=100)
    # then 800 came back
    assert await _admit(holder, tokens=800) is None
    assert (await _admit(holder, tokens=101)).code == "rate_limit_exceeded"
    await limits.redis_close()


async def test_leases_stop_at_the_limit_and_come_back_when_released(settings):
    settings.LLM_KEY_CONCURRENT_STREAMS = 3
    holder = Holder(key=f"l-{time.time_ns()}", organisation=None)
    leases = [await limits.lease_acquire(holder=holder) for _ in range(3)]
    with pytest.raises(GatewayError) as caught:
        await limits.lease_acquire(holder=holder)
    assert caught.value.status == 429
    assert await limits.leases_count(holder=holder) == [3]
    await limits.lease_release(leases[0])
    await limits.lease_acquire(holder=holder)
    assert await limits.leases_count(holder=holder) == [3]
    await limits.redis_close()


async def test_a_lease_left_by_a_dead_worker_lapses(settings, monkeypatch):
    # given one place in flight, taken by a worker that then died (never released)
    settings.LLM_KEY_CONCURRENT_STREAMS = 1
    holder = Holder(key=f"d-{time.time_ns()}", organisation=None)
    monkeypatch.setattr(limits, "LEASE_SECONDS", 0.2)
    await limits.lease_acquire(holder=holder)
    with pytest.raises(GatewayError):
        await limits.lease_acquire(holder=holder)
    # when its lease's time is up, then the place is free again
    await asyncio.sleep(0.3)
    await limits.lease_acquire(holder=holder)
    await limits.redis_close()


async def test_a_renewed_lease_outlives_its_first_term(settings, monkeypatch):
    settings.LLM_KEY_CONCURRENT_STREAMS = 1
    holder = Holder(key=f"r-{time.time_ns()}", organisation=None)
    monkeypatch.setattr(limits, "LEASE_SECONDS", 0.3)
    lease = await limits.lease_acquire(holder=holder)
    await asyncio.sleep(0.2)
    await limits.lease_renew(lease)
    await asyncio.sleep(0.2)  # past the first term, within the renewed one
    with pytest.raises(GatewayError):
        await limits.lease_acquire(holder=holder)
    await limits.redis_close()
