"""What the benchmark scripts share: printing, and a PostgreSQL database of their own."""

import sys


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _maintenance(server_url: str, statement) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def database_create(server_url: str, name: str) -> None:
    """A fresh, empty database `name` (any earlier one of that name is dropped first)."""
    from psycopg import sql

    database_drop(server_url, name)
    _maintenance(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(server_url: str, name: str) -> None:
    from psycopg import sql

    _maintenance(
        server_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )
