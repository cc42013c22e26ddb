"""The README stands on its own in a fresh clone: every setting a deployment can give through the
environment is in it, and it links nowhere outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
README = (REPO / "README.md").read_text()
# env("NAME", ...), env.int("NAME", ...), env.str(...), ...: how the settings read a variable
READ = re.compile(r"\benv(?:\.[a-z_]+)?\(\s*\"([A-Z][A-Z0-9_]+)\"")


def settings_variables() -> set[str]:
    found = set()
    for path in (REPO / "portal" / "settings").glob("*.py"):
        found |= set(READ.findall(path.read_text()))
    return found


def documented(name: str) -> bool:
    if f"`{name}`" in README:
        return True
    # a row may name a pair as `FIRST_NAME` / `_SUFFIX`
    return any(
        f"`{name[:i]}" in README and f"`{name[i:]}`" in README
        for i in range(1, len(name))
        if name[i] == "_"
    )


def test_every_environment_variable_the_settings_read_is_in_the_readme():
    variables = settings_variables()
    assert len(variables) > 40  # the pattern still finds what the settings read
    assert sorted(v for v in variables if not documented(v)) == []


def test_the_readme_links_nowhere_outside_the_repository():
    targets = re.findall(r"\]\(([^)]+)\)", README)
    outside = [t for t in targets if "://" in t or t.startswith(("/", "..", "~"))]
    assert outside == []
    for target in targets:
        assert (REPO / target.split("#")[0]).exists(), target
