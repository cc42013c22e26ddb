"""The vendored front-end files are the reviewed bytes (issue 13, supply chain).

.ci/vendor-assets.sha256 records the SHA-256 of every file under static/vendor/; the portal
serves those files to every browser, so a changed or added one must not pass unnoticed.
"""

import hashlib
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MANIFEST = Path(".ci/vendor-assets.sha256")
SCRIPT = Path(".ci/vendor-assets.sh")
VENDOR = Path("static/vendor")


def differences(root: Path) -> list[str]:
    """Paths whose bytes differ from the manifest, are missing, or are not recorded."""
    recorded = {}
    for line in (root / MANIFEST).read_text().splitlines():
        digest, path = line.split("  ", 1)
        recorded[path] = digest
    on_disk = {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (root / VENDOR).rglob("*")
        if path.is_file()
    }
    return sorted(p for p in recorded.keys() | on_disk.keys() if recorded.get(p) != on_disk.get(p))


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603
        ["/bin/bash", str(root / SCRIPT), "--check"], capture_output=True, text=True, check=False
    )


def copy_of_the_repo(tmp_path: Path) -> Path:
    (tmp_path / ".ci").mkdir()
    for path in (MANIFEST, SCRIPT):
        shutil.copy2(REPO / path, tmp_path / path)
    shutil.copytree(REPO / VENDOR, tmp_path / VENDOR)
    return tmp_path


def test_every_vendored_file_is_recorded_and_matches_its_hash():
    # given the checkout; then the manifest and the files agree, in Python and in the script
    assert differences(REPO) == []
    assert len((REPO / MANIFEST).read_text().splitlines()) >= 5
    result = check(REPO)
    assert result.returncode == 0, result.stderr


def test_one_changed_byte_is_caught(tmp_path):
    # given a copy of the vendored files and the manifest
    root = copy_of_the_repo(tmp_path)
    target = root / VENDOR / "htmx" / "htmx.min.js"
    data = bytearray(target.read_bytes())

    # when an attacker changes one byte of the script every page loads
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    # then both checks name that file, and the manifest is untouched
    assert differences(root) == ["static/vendor/htmx/htmx.min.js"]
    result = check(root)
    assert result.returncode == 1
    assert "static/vendor/htmx/htmx.min.js" in result.stderr
    assert (root / MANIFEST).read_bytes() == (REPO / MANIFEST).read_bytes()


def test_an_unrecorded_file_is_caught(tmp_path):
    # given a copy; when a file nobody recorded appears among the vendored assets
    root = copy_of_the_repo(tmp_path)
    (root / VENDOR / "htmx" / "extra.js").write_text("fetch('https://example.com/x')")

    # then it is reported
    assert differences(root) == ["static/vendor/htmx/extra.js"]
    assert check(root).returncode == 1
