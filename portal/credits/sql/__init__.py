"""The ledger's PostgreSQL functions, one per file: `<name>.sql` is the function's current
definition, and the only place to read or change it (credits.posting calls them).

Each file is written as PostgreSQL prints the function back (`pg_get_functiondef`): canonical
type names (`character varying`, `timestamp with time zone`), the body between `$function$`
quotes. Layout is free: `definition` ignores the comment lines before CREATE, runs of whitespace
and spaces beside brackets and commas, and the schema.

A migration installs functions with `FunctionsInstall({name: digest})`, which reads the files
when it runs, on PostgreSQL only (SQLite posts through the ORM). The digest is `digest()` of the
file the migration was written for. Changing a file therefore takes a new migration that
installs it again under its new digest: tests/portal/credits/test_sql_functions.py fails until
there is one, and prints the operation to add. CREATE OR REPLACE cannot change a function's
arguments or result columns: for that, drop the old signature first in the same migration.

Migrations import this module: keep `FunctionsInstall` and `digest` stable.
"""

import hashlib
import re
from pathlib import Path

from django.db import migrations

DIRECTORY = Path(__file__).resolve().parent


def source(name: str) -> str:
    """The file's text, comments and all: what a migration executes."""
    return (DIRECTORY / f"{name}.sql").read_text(encoding="utf-8")


def names() -> list[str]:
    return sorted(path.stem for path in DIRECTORY.glob("*.sql"))


def definition(text: str) -> str:
    """A function's definition with layout made irrelevant, for comparing a file with what
    `pg_get_functiondef` prints (after the schema is taken off its name)."""
    lines = text.strip().splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    text = "\n".join(lines).strip().removesuffix(";")
    text = re.sub(r"\s+", " ", text)
    return re.sub(r" ?([(),]) ?", r"\1", text)


def digest(text: str) -> str:
    return hashlib.sha256(definition(text).encode()).hexdigest()[:16]


class FunctionsInstall(migrations.RunPython):
    """Install (CREATE OR REPLACE) functions from their files, on PostgreSQL only.

    `functions` maps each name to the digest of the file this migration was written for (the
    test that guards the files reads it); `reverse_sql` is what undoes it, if anything can.
    """

    def __init__(self, functions: dict[str, str], *, reverse_sql: str = ""):
        self.functions = dict(functions)
        self.reverse_sql = reverse_sql
        super().__init__(self._install, self._reverse)

    def _install(self, apps, schema_editor) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        for name in self.functions:
            # params=None: the SQL may carry a literal % that must not be read as a placeholder
            schema_editor.execute(source(name), params=None)

    def _reverse(self, apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql" and self.reverse_sql:
            schema_editor.execute(self.reverse_sql, params=None)
