"""The hub's proxy is the pinned configurable-http-proxy (issue 13, supply chain).

sandboxes/spawner/proxy/package-lock.json records every package of the proxy's tree with an
exact version and an integrity hash, and no registry host (npm uses the machine's own). The hub
runs the copy `npm ci` installed from it, not whatever is first on PATH.
"""

import json
from pathlib import Path

from tests.sandboxes.hub import RunningHub

PROXY = Path(__file__).resolve().parents[3] / "sandboxes" / "spawner" / "proxy"
PINNED = PROXY / "node_modules" / ".bin" / "configurable-http-proxy"


def lock() -> dict:
    return json.loads((PROXY / "package-lock.json").read_text())


def test_the_lock_pins_every_package_by_version_and_hash_and_names_no_registry():
    # given the package and its lock
    wanted = json.loads((PROXY / "package.json").read_text())["dependencies"]
    packages = {path: entry for path, entry in lock()["packages"].items() if path}

    # then the proxy is one exact version, the lock's own
    assert list(wanted) == ["configurable-http-proxy"]
    version = wanted["configurable-http-proxy"]
    assert version.replace(".", "").isdigit(), f"{version!r} is a range, not a version"
    assert packages["node_modules/configurable-http-proxy"]["version"] == version
    # and every package of the tree carries a SHA-512 and no registry URL
    assert packages
    for path, entry in packages.items():
        assert entry["integrity"].startswith("sha512-"), path
        assert "resolved" not in entry, f"{path}: the lock must not name a registry"


def test_the_installed_tree_is_the_locked_one():
    # given what `npm ci` installed
    for path, entry in lock()["packages"].items():
        if not path:
            continue
        # then each package on disk is the version the lock names
        installed = json.loads((PROXY / path / "package.json").read_text())
        assert installed["version"] == entry["version"], path


def test_the_hub_runs_the_pinned_proxy(hub: RunningHub):
    # given a running hub; when we look at the proxy process it started
    pid = int((hub.data_dir / "jupyterhub-proxy.pid").read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")

    # then it is node running the pinned script, not a global configurable-http-proxy
    assert Path(argv[0].decode()).name == "node"
    assert Path(argv[1].decode()) == PINNED
