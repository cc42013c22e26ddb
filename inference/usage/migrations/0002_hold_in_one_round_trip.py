"""PostgreSQL: a request's hold is one function call (inference/usage/sql/llm_usage_hold.sql),
one round trip instead of a seven-statement transaction. SQLite keeps the ORM's path."""

from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parents[1] / "sql" / "llm_usage_hold.sql"
DROP = (
    "DROP FUNCTION IF EXISTS public.llm_usage_hold(character varying, bigint, bigint, bigint,"
    " bigint, bigint, character varying, boolean, bigint, timestamp with time zone)"
)


def _install(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        # params=None: the file's text is run as it is (no placeholders in it)
        schema_editor.execute(SQL.read_text(encoding="utf-8"), params=None)


def _drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("llm_usage", "0001_initial")]

    operations = [migrations.RunPython(_install, _drop)]
