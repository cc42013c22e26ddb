"""Per key and per organisation limits on /llm/v1, in Redis, each decided by one atomic script.

- Requests and tokens per minute: fixed one-minute windows. One script checks all four
  counters (key and organisation, requests and tokens) and only then adds to them, so a refused
  request counts nowhere and a burst from many workers stops exactly at a limit. Tokens are
  counted at admission as the most the request may use (prompt bound + max_tokens) and given
  back once the engine says what it used (`tokens_settle`).
- Requests in flight (LLM_*_CONCURRENT_STREAMS): a lease per request in a sorted set per key
  and per organisation, scored by when it lapses. The request renews it while it streams and
  removes it when it ends, however it ends; a worker killed mid-stream leaves a lease that
  lapses after LEASE_SECONDS and is swept by the next acquire.

A limit of 0 is no limit. The house's Redis (settings.REDIS_URL), with the cache's key prefix.
"""

import asyncio
import time
import uuid
import weakref
from dataclasses import dataclass

from django.conf import settings
from redis.asyncio import BlockingConnectionPool, Redis

from portal.apikeys import keycache

from .errors import rate_limited

WINDOW_SECONDS = 60
LEASE_SECONDS = 60  # renewed every LEASE_RENEW_SECONDS while a request runs
LEASE_RENEW_SECONDS = 20
REDIS_MAX_CONNECTIONS = 64  # per process (per event loop)
REDIS_WAIT_SECONDS = 5

# KEYS: counters. ARGV: ttl, then per counter (limit, amount). Returns 0 when admitted, else the
# 1-based index of the first counter that would pass its limit.
_WINDOW_SCRIPT = """
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local amount = tonumber(ARGV[2 * i + 1])
  if limit > 0 and (tonumber(redis.call('GET', KEYS[i]) or '0') + amount) > limit then
    return i
  end
end
for i = 1, n do
  local amount = tonumber(ARGV[2 * i + 1])
  if amount ~= 0 then
    redis.call('INCRBY', KEYS[i], amount)
    redis.call('EXPIRE', KEYS[i], ARGV[1])
  end
end
return 0
"""

# KEYS: lease sets. ARGV: now, expires, member, ttl, then a limit per set. Returns 0 when the
# lease is taken in every set, else the 1-based index of the full one.
_LEASE_SCRIPT = """
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  local limit = tonumber(ARGV[4 + i])
  if limit > 0 and redis.call('ZCARD', KEYS[i]) >= limit then
    return i
  end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return 0
"""

# Both of the above in one round trip (every request takes both, one after the other). KEYS: the
# window counters (per subject: requests, then tokens), then the lease sets. ARGV: how many
# counters, their ttl, per counter (limit, amount), then now, expires, member, the lease ttl,
# a limit per set. Returns 0 when admitted with a lease; i when window counter i would pass
# its limit (nothing counted); -j when lease set j is full (the request counted, its tokens
# given back: what requests_admit then lease_acquire then tokens_settle(0) do).
_ADMIT_LEASE_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local amount = tonumber(ARGV[2 + 2 * i])
  if limit > 0 and (tonumber(redis.call('GET', KEYS[i]) or '0') + amount) > limit then
    return i
  end
end
for i = 1, n do
  local amount = tonumber(ARGV[2 + 2 * i])
  if amount ~= 0 then
    redis.call('INCRBY', KEYS[i], amount)
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
end
local at = 2 + 2 * n
local now, expires, member, ttl = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
for j = n + 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', now)
  local limit = tonumber(ARGV[at + 4 + j - n])
  if limit > 0 and redis.call('ZCARD', KEYS[j]) >= limit then
    for i = 2, n, 2 do
      local amount = tonumber(ARGV[2 + 2 * i])
      if amount > 0 then
        redis.call('DECRBY', KEYS[i], amount)
      end
    end
    return -(j - n)
  end
end
for j = n + 1, #KEYS do
  redis.call('ZADD', KEYS[j], expires, member)
  redis.call('EXPIRE', KEYS[j], ttl)
end
return 0
"""

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis]" = (
    weakref.WeakKeyDictionary()
)


def _redis() -> Redis:
    """One client (one connection pool) per event loop: a pool cannot cross loops."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # A bounded pool that waits for a free connection: hundreds of streams starting or
        # ending at once queue for a moment rather than fail ("Too many connections").
        pool = BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_WAIT_SECONDS,
            socket_connect_timeout=2,
            socket_timeout=2,
        )
        client = Redis(connection_pool=pool)
        _clients[loop] = client
    return client


async def redis_close() -> None:
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    if client is not None:
        await client.aclose()


def _prefix() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:llm"


@dataclass(frozen=True)
class Holder:
    """Whose limits a request counts against: its key, and the organisation paying (None for
    a person's own key or the playground's person: they have the key limits only)."""

    key: str  # the API key's id, or "user:<pk>" for the playground
    organisation: str | None

    def subjects(self) -> list[tuple[str, str]]:
        out = [("key", self.key)]
        if self.organisation:
            out.append(("org", self.organisation))
        return out


def _limits(kind: str) -> tuple[int, int, int]:
    if kind == "key":
        return (
            settings.LLM_KEY_REQUESTS_PER_MINUTE,
            settings.LLM_KEY_TOKENS_PER_MINUTE,
            settings.LLM_KEY_CONCURRENT_STREAMS,
        )
    return (
        settings.LLM_ORGANISATION_REQUESTS_PER_MINUTE,
        settings.LLM_ORGANISATION_TOKENS_PER_MINUTE,
        settings.LLM_ORGANISATION_CONCURRENT_STREAMS,
    )


_WHO = {"key": "this key", "org": "this organisation"}


@dataclass
class Admission:
    """What an admitted request counted, so it can give back the tokens it did not use."""

    window: int
    token_keys: list[str]
    tokens_counted: int


def _window_counters(holder: Holder, tokens: int, window: int):
    """(counter keys, (limit, amount) per counter, what each counts, the token counters)."""
    keys, pairs, names, token_keys = [], [], [], []
    for kind, subject in holder.subjects():
        rpm, tpm, _streams = _limits(kind)
        base = f"{_prefix()}:{kind}:{subject}:{window}"
        keys += [f"{base}:requests", f"{base}:tokens"]
        pairs += [rpm, 1, tpm, tokens]
        names += [(kind, "requests"), (kind, "tokens")]
        token_keys.append(f"{base}:tokens")
    return keys, pairs, names, token_keys


def _window_refused(names, refused: int, *, window: int, now: float):
    kind, what = names[refused - 1]
    retry_after = int((window + 1) * WINDOW_SECONDS - now) + 1
    per_minute = "requests" if what == "requests" else "tokens"
    return rate_limited(
        f"Rate limit reached for {_WHO[kind]}: {per_minute} per minute. "
        f"Try again in {retry_after} s.",
        retry_after=retry_after,
    )


async def requests_admit(*, holder: Holder, tokens: int) -> Admission:
    """Count one request and `tokens` against every limit of `holder`, or none of them:
    GatewayError 429 rate_limit_exceeded with Retry-After when one would pass its limit."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    keys, pairs, names, token_keys = _window_counters(holder, tokens, window)
    refused = await _redis().eval(_WINDOW_SCRIPT, len(keys), *keys, WINDOW_SECONDS + 5, *pairs)
    if refused:
        raise _window_refused(names, int(refused), window=window, now=now)
    return Admission(window=window, token_keys=token_keys, tokens_counted=tokens)


async def admit_and_lease(*, holder: Holder, tokens: int) -> tuple[Admission, "Lease"]:
    """`requests_admit` then `lease_acquire` (giving the tokens back when the lease is
    refused) in one round trip to Redis: the same counts, refusals and 429s."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    keys, pairs, names, token_keys = _window_counters(holder, tokens, window)
    lease_keys, lease_limits = _lease_keys(holder)
    member = uuid.uuid4().hex
    result = int(
        await _redis().eval(
            _ADMIT_LEASE_SCRIPT,
            len(keys) + len(lease_keys),
            *keys,
            *lease_keys,
            len(keys),
            WINDOW_SECONDS + 5,
            *pairs,
            now,
            now + LEASE_SECONDS,
            member,
            int(LEASE_SECONDS) + 5,
            *lease_limits,
        )
    )
    if result > 0:
        raise _window_refused(names, result, window=window, now=now)
    if result < 0:
        raise _lease_full(holder, lease_limits, -result)
    return (
        Admission(window=window, token_keys=token_keys, tokens_counted=tokens),
        Lease(member=member, keys=lease_keys),
    )


async def tokens_settle(*, admission: Admission, tokens_used: int) -> None:
    """Give back the tokens counted at admission and not used, while the window lasts."""
    unused = admission.tokens_counted - tokens_used
    if unused <= 0 or int(time.time() // WINDOW_SECONDS) != admission.window:
        return
    client = _redis()
    async with client.pipeline(transaction=False) as pipe:
        for key in admission.token_keys:
            pipe.decrby(key, unused)
        await pipe.execute()


@dataclass
class Lease:
    member: str
    keys: list[str]


def _lease_keys(holder: Holder) -> tuple[list[str], list[int]]:
    keys, limits = [], []
    for kind, subject in holder.subjects():
        keys.append(f"{_prefix()}:inflight:{kind}:{subject}")
        limits.append(_limits(kind)[2])
    return keys, limits


async def lease_acquire(*, holder: Holder) -> Lease:
    """Take a place among the requests `holder` has in flight, or 429 when they are full."""
    keys, limits = _lease_keys(holder)
    member = uuid.uuid4().hex
    now = time.time()
    full = await _redis().eval(
        _LEASE_SCRIPT,
        len(keys),
        *keys,
        now,
        now + LEASE_SECONDS,
        member,
        int(LEASE_SECONDS) + 5,
        *limits,
    )
    if full:
        raise _lease_full(holder, limits, int(full))
    return Lease(member=member, keys=keys)


def _lease_full(holder: Holder, limits: list[int], full: int):
    kind = holder.subjects()[full - 1][0]
    return rate_limited(
        f"Rate limit reached for {_WHO[kind]}: too many requests in flight at once "
        f"(at most {limits[full - 1]}). Wait for one to finish.",
        retry_after=1,
    )


async def lease_renew(lease: Lease) -> None:
    client = _redis()
    expires = time.time() + LEASE_SECONDS
    async with client.pipeline(transaction=False) as pipe:
        for key in lease.keys:
            pipe.zadd(key, {lease.member: expires}, xx=True)
        await pipe.execute()


async def lease_release(lease: Lease) -> None:
    client = _redis()
    async with client.pipeline(transaction=False) as pipe:
        for key in lease.keys:
            pipe.zrem(key, lease.member)
        await pipe.execute()


async def leases_count(*, holder: Holder) -> list[int]:
    """How many requests `holder` has in flight now, per lease set (tests and the bench)."""
    keys, _limits_ = _lease_keys(holder)
    client = _redis()
    now = time.time()
    return [await client.zcount(key, now, "+inf") for key in keys]


async def keys_epoch() -> bytes | None:
    """The API keys' generation (portal.apikeys.keycache): b"0" before any change was
    recorded; None when Redis cannot say (then nothing remembered is used)."""
    try:
        value = await _redis().get(keycache.epoch_key())
    except Exception:
        return None
    return b"0" if value is None else value
