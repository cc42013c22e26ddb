"""Database connections around a fork.

A child process must not share a connection with its parent, and with psycopg's pool
(`DATABASES["default"]["OPTIONS"]["pool"]`) closing the connections is not enough: the pool
object, with its worker threads and its idle connections, would be copied into the child, where
its threads no longer run and its sockets are the parent's. Closing the pools too makes each
process open a pool of its own on first use.
"""

from django.db import connections


def connections_close_for_fork() -> None:
    """Close every connection and every connection pool of this process (before a fork)."""
    for connection in connections.all(initialized_only=True):
        connection.close()
        close_pool = getattr(connection, "close_pool", None)  # PostgreSQL's wrapper only
        if close_pool is not None:
            close_pool()
