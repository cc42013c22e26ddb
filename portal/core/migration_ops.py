"""Database operations that migrations share. Migrations import this module: keep it stable.

`AppendOnly(table)` makes a table refuse UPDATE and DELETE in the database itself, so that not
even a hand-written query can rewrite history. PostgreSQL refuses both (TRUNCATE stays possible
for the test runner and for retention jobs run by an operator). SQLite refuses UPDATE and keeps
DELETE, because Django's test flush deletes rows.

SQLite rebuilds a table for most schema changes and the rebuilt table has no triggers: every
migration that alters an append-only table must end with AppendOnly for it again (it is safe to
repeat on PostgreSQL too).
"""

from django.db import migrations

_POSTGRES_FORWARD = """
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{table} is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS {name} ON {table};
CREATE TRIGGER {name} BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {name}();
"""
_POSTGRES_BACKWARD = "DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}();"
_SQLITE_FORWARD = """
CREATE TRIGGER IF NOT EXISTS {name}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only (UPDATE refused)'); END;
"""
_SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS {name}_no_update;"


def _by_vendor(sql_by_vendor: dict[str, str]):
    def apply(apps, schema_editor):
        sql = sql_by_vendor.get(schema_editor.connection.vendor)
        if sql:
            # params=None: the SQL may carry a literal % that must not be read as a placeholder
            schema_editor.execute(sql, params=None)

    return apply


def VendorSQL(  # noqa: N802 - reads like an operation
    forward: dict[str, str], backward: dict[str, str]
) -> migrations.RunPython:
    """Raw SQL for some database vendors ("postgresql", "sqlite"); nothing for the others."""
    return migrations.RunPython(_by_vendor(forward), _by_vendor(backward))


def AppendOnly(table: str, name: str) -> migrations.RunPython:  # noqa: N802 - reads like an operation
    def sql(template: str) -> str:
        return template.format(table=table, name=name)

    return VendorSQL(
        {"postgresql": sql(_POSTGRES_FORWARD), "sqlite": sql(_SQLITE_FORWARD)},
        {"postgresql": sql(_POSTGRES_BACKWARD), "sqlite": sql(_SQLITE_BACKWARD)},
    )
