"""A per-key request limit that holds under concurrency: one atomic Redis script per request.

Fixed windows: the counter for (key, window) is incremented and, on first use, given an
expiry, in one EVAL, so a burst from many threads or processes is cut at the limit exactly.
"""

import time
from functools import cache

from django.conf import settings
from redis import Redis

_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@cache
def _redis() -> Redis:
    return Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


@cache
def _script():
    return _redis().register_script(_SCRIPT)


def hit(*, bucket: str, limit: int, window_seconds: int) -> tuple[bool, int]:
    """Count one request: (allowed, seconds until the window resets)."""
    now = time.time()
    window = int(now // window_seconds)
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    name = f"{prefix}:ratelimit:{bucket}:{window}"
    count = _script()(keys=[name], args=[window_seconds + 1])
    retry_after = max(1, int((window + 1) * window_seconds - now + 0.999))
    return count <= limit, retry_after
