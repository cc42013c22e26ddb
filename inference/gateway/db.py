"""The gateway's trips to the database from its async code.

`hop(fn)` runs a synchronous ORM function on the request's own thread (sync_to_async), and with
`release=True` hands the thread's connection back to the pool afterwards. Django returns a
request's connection only when the request ends: a stream that holds its connection for its
whole length would take the pool with it (200 streams, a pool of 64), so a request that will
now wait on an engine gives its connection back first.
"""

import functools

from asgiref.sync import sync_to_async
from django.db import connections


def _closing(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            for connection in connections.all(initialized_only=True):
                if not connection.in_atomic_block:
                    connection.close()

    return run


def hop(fn, *, release: bool = False):
    return sync_to_async(_closing(fn) if release else fn)


def detached(fn):
    """For work done after the response (no request to close the connection at its end): a
    thread of the shared pool, its connection handed back at once."""
    return sync_to_async(_closing(fn), thread_sensitive=False)
