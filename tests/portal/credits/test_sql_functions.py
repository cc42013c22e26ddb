"""The ledger's SQL functions are their files in portal/credits/sql/, and every change to a file
comes with the migration that installs it.

A test database is migrated from the files as they are now, so comparing it with the files
alone could not notice a file edited without a migration (a database migrated earlier would
keep the old function). Each installing migration therefore records the digest of the file it
was written for, and the newest one must name the file as it is.
"""

import re

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from portal.credits import sql


def _newest_installs() -> dict[str, tuple[str, str]]:
    """{function: (migration, digest)}, from the newest credits migration that installs it."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    (leaf,) = loader.graph.leaf_nodes("credits")
    newest = {}
    for key in loader.graph.forwards_plan(leaf):
        for operation in loader.graph.nodes[key].operations:
            if isinstance(operation, sql.FunctionsInstall):
                for name, digest in operation.functions.items():
                    newest[name] = (key[1], digest)
    return newest


def test_every_file_is_installed_by_a_migration_written_for_it_as_it_is():
    # given the files, and what the newest migration installing each recorded
    newest = _newest_installs()

    # then each file is the one its newest migration was written for
    assert sql.names() == sorted(newest), "a function file without a migration, or the reverse"
    for name in sql.names():
        migration, recorded = newest[name]
        now = sql.digest(sql.source(name))
        assert now == recorded, (
            f"portal/credits/sql/{name}.sql changed after migration {migration} installed it: "
            f'add a migration with FunctionsInstall({{"{name}": "{now}"}}) (a new signature or '
            "new result columns: drop the old function first)"
        )


def test_a_whitespace_or_comment_change_needs_no_migration():
    text = sql.source("credits_post")
    relaid = "-- a new note\n" + re.sub(r"\(\n\s+", "(  ", text).replace("\n", "\n\n")
    assert sql.digest(relaid) == sql.digest(text)
    assert sql.digest(text.replace("ON CONFLICT", "ON  CONFLICT")) == sql.digest(text)
    assert sql.digest(text.replace("DO NOTHING", "DO UPDATE")) != sql.digest(text)


@pytest.mark.django_db
def test_each_function_in_the_database_is_its_file():
    if connection.vendor != "postgresql":
        pytest.skip("The ledger's functions are PostgreSQL's; `make test` runs this")
    # given the functions as the migrated database holds them
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname, n.nspname, pg_get_functiondef(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = ANY(%s) AND n.nspname = current_schema()",
            [sql.names()],
        )
        installed = cursor.fetchall()

    # then there is one of each (no overload left behind), and it reads as its file
    assert sorted(name for name, _schema, _text in installed) == sql.names()
    for name, schema, text in installed:
        unqualified = text.replace(f"FUNCTION {schema}.{name}(", f"FUNCTION {name}(", 1)
        assert sql.definition(unqualified) == sql.definition(sql.source(name)), name
