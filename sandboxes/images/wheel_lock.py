"""Write an image's requirements.lock: its requirements.txt with the SHA-256 of every wheel.

    python wheel_lock.py REPORT REQUIREMENTS LOCK

REPORT is what `pip install --dry-run --report` resolved for the image's interpreter and
platform (build.sh --lock runs it; only the wheels' metadata is fetched). The lock is what the
image build installs with `pip --require-hashes`, on the host (the wheelhouse download) and in
`docker build` (the install), so a wheel that is not byte for byte the reviewed one stops the
build. Hashes already in LOCK for the same name and version are kept, so running --lock on
another architecture adds that architecture's wheels instead of replacing this one's.

Refuses a requirements.txt that does not pin every package the image installs (a dependency
it forgot would otherwise be installed unreviewed) or that pins one it does not install.
"""

import hashlib
import json
import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
HEADER = "# requirements.txt sha256: "


def canonical(name: str) -> str:
    """PEP 503 normalised name: what pip compares."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_read(path: Path) -> dict[str, tuple[str, str]]:
    """canonical name -> (name as written, version) for every `name==version` line."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        if not match:
            sys.exit(f"wheel_lock: {path}: {line!r} is not pinned as name==version")
        pins[canonical(match[1])] = (match[1], match[2])
    return pins


def hashes_read(lock: Path) -> dict[tuple[str, str], set[str]]:
    """(canonical name, version) -> hashes already recorded in an existing lock."""
    if not lock.exists():
        return {}
    recorded: dict[tuple[str, str], set[str]] = {}
    for entry in re.split(r"(?<!\\)\n", lock.read_text()):
        match = PIN.match(entry.strip())
        if match:
            key = (canonical(match[1]), match[2])
            recorded.setdefault(key, set()).update(HASH.findall(entry))
    return recorded


def main(report_path: str, requirements_path: str, lock_path: str) -> None:
    requirements, lock = Path(requirements_path), Path(lock_path)
    pins = pins_read(requirements)
    resolved = {}
    for item in json.loads(Path(report_path).read_text())["install"]:
        name = canonical(item["metadata"]["name"])
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            sys.exit(f"wheel_lock: the index gave no sha256 for {name}")
        resolved[name] = (item["metadata"]["version"], digest)
    unpinned = sorted(set(resolved) - set(pins))
    unused = sorted(set(pins) - set(resolved))
    if unpinned or unused:
        sys.exit(
            f"wheel_lock: {requirements} does not match what pip resolves: "
            f"not pinned {unpinned or 'none'}; pinned but not installed {unused or 'none'}"
        )
    for name, (version, _) in resolved.items():
        if pins[name][1] != version:
            sys.exit(f"wheel_lock: pip resolved {name} {version}, not the pinned {pins[name][1]}")

    recorded = hashes_read(lock)
    lines = [
        f"# {requirements.parent.name}: the wheels of requirements.txt with their SHA-256,"
        " installed",
        "# with pip --require-hashes. Written by `make images-lock`; do not edit by hand.",
        f"{HEADER}{hashlib.sha256(requirements.read_bytes()).hexdigest()}",
        "",
    ]
    for name in sorted(pins):
        written, version = pins[name]
        digests = sorted({resolved[name][1], *recorded.get((name, version), set())})
        lines.append(
            " \\\n".join([f"{written}=={version}", *(f"    --hash=sha256:{d}" for d in digests)])
        )
    lock.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
