"""The sandbox image nac/python-cpu, built by `make images`, in a real docker engine.

The hub's spawner starts this image as the user's server: it must run as jovyan (uid 1000) by
default, carry the same JupyterHub as the hub, have the scientific stack, let uid 1000 write to a
fresh home volume, and say (by label) which recipe it was built from.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import jupyterhub
import pytest

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "sandboxes" / "images" / "python-cpu"
IMAGE = "nac/python-cpu:2026.11"
WHEELHOUSE = REPO / "var" / "wheelhouse" / "python-cpu"
BUILD_SH = REPO / "sandboxes" / "images" / "build.sh"


def recipe_hash(folder: Path) -> str:
    """The definition build.sh uses: sha256 over "<sha256>  ./<path>" lines, sorted bytewise."""
    files = sorted(
        (f"./{path.relative_to(folder).as_posix()}".encode(), path)
        for path in folder.rglob("*")
        if path.is_file() and path.suffix != ".pyc"
    )
    listing = b"".join(
        hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"  " + name + b"\n"
        for name, path in files
    )
    return hashlib.sha256(listing).hexdigest()


@pytest.fixture(scope="module")
def client():
    client = docker.from_env()
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(client):
    try:
        return client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{IMAGE} is not built: run `make images` first")


def run(client, *command: str, **kwargs) -> str:
    return client.containers.run(IMAGE, list(command), remove=True, **kwargs).decode().strip()


def test_runs_as_jovyan_uid_1000_gid_100_in_its_home_by_default(client, image):
    assert run(client, "sh", "-c", 'echo "$(id -u) $(id -g) $(id -un) $HOME $(pwd)"') == (
        "1000 100 jovyan /home/jovyan /home/jovyan"
    )


def test_default_command_is_the_single_user_server(image):
    assert image.attrs["Config"]["Cmd"] == ["jupyterhub-singleuser"]
    assert "8888/tcp" in image.attrs["Config"]["ExposedPorts"]


def test_singleuser_server_is_the_hubs_jupyterhub_version(client, image):
    assert run(client, "jupyterhub-singleuser", "--version", user="1000") == jupyterhub.__version__


@pytest.mark.parametrize("recipe", ["python-cpu", "pytorch-gpu"])
def test_every_recipe_pins_the_hubs_jupyterhub_version(recipe):
    requirements = (RECIPE.parent / recipe / "requirements.txt").read_text().splitlines()
    assert f"jupyterhub=={jupyterhub.__version__}" in requirements


def test_scientific_stack_imports(client, image):
    code = (
        "import numpy, pandas, sklearn, jupyterlab, ipykernel;"
        "from sklearn.linear_model import LinearRegression;"
        "x = numpy.arange(4.0).reshape(-1, 1);"
        "m = LinearRegression().fit(x, 2 * x.ravel() + 1);"
        "print(round(float(m.coef_[0]), 6), len(pandas.DataFrame({'a': [1, 2]})))"
    )
    assert run(client, "python", "-c", code) == "2.0 2"


def test_a_new_home_volume_is_writable_by_uid_1000(client, image):
    volume = client.volumes.create(f"nac-test-home-{uuid.uuid4().hex[:10]}")
    try:
        out = run(
            client,
            "sh",
            "-c",
            "echo hi > ~/notes.txt && stat -c '%u:%g' ~ ~/notes.txt",
            volumes={volume.name: {"bind": "/home/jovyan", "mode": "rw"}},
        )
        assert out.split() == ["1000:100", "1000:100"]
    finally:
        volume.remove(force=True)


def test_labels_name_the_recipe_it_was_built_from(image):
    labels = image.labels
    assert labels["nac.recipe-hash"] == recipe_hash(RECIPE), "image is stale: run `make images`"
    assert labels["nac.image"] == "python-cpu"
    assert labels["org.opencontainers.image.version"] == "2026.11"


def test_jupyterlab_fetches_no_news_and_checks_for_no_updates(client, image):
    """Sovereignty inside the sandbox: JupyterLab's news feed (jupyterlab.github.io) and update
    check (PyPI) are off in the running server, as its page config and update API report."""
    script = (
        "jupyter lab --no-browser --ip=127.0.0.1 --port=8899 --IdentityProvider.token='' "
        ">/tmp/lab.log 2>&1 & "
        "for i in $(seq 60); do "
        "python -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8899/lab')"
        '.read().decode())" 2>/dev/null | grep -o \'"news": {[^}]*}\' && break; sleep 0.5; done; '
        'python -c "import urllib.request as u; print(u.urlopen('
        "'http://127.0.0.1:8899/lab/api/update').read().decode())\""
    )
    news, update = run(client, "bash", "-c", script).splitlines()[-2:]
    assert news == '"news": {"disabled": true}'
    assert update == '{"notification": null}'


def pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` line (a lock's continuation lines skipped)."""
    return dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, flags=re.MULTILINE))


@pytest.mark.parametrize("recipe", ["python-cpu", "pytorch-gpu"])
def test_every_recipe_installs_its_wheels_by_hash_from_a_current_lock(recipe):
    # given the recipe's requirements.txt, its lock and its Dockerfile
    folder = RECIPE.parent / recipe
    requirements = (folder / "requirements.txt").read_bytes()
    lock = (folder / "requirements.lock").read_text()
    dockerfile = (folder / "Dockerfile").read_text()

    # then the lock was made from this requirements.txt and pins the same versions
    assert f"# requirements.txt sha256: {hashlib.sha256(requirements).hexdigest()}" in lock
    assert pins(lock) == pins(requirements.decode())
    # and every package carries at least one SHA-256
    entries = re.split(r"(?<!\\)\n", lock)
    for entry in (e for e in entries if e and not e.startswith("#")):
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry
    # and the image installs the lock, in hash-checking mode, from the wheelhouse only
    assert "--no-index --find-links /tmp/wheelhouse --require-hashes -r /tmp/requirements.lock" in (
        dockerfile
    )


def pip_from_wheelhouse(wheelhouse: Path, lock: Path, dest: Path) -> subprocess.CompletedProcess:
    """What build.sh's download does, offline: take every locked wheel from `wheelhouse`."""
    options = [
        "download",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation=cp",
        "--python-version=3.11.2",
        "--platform=manylinux2014_x86_64",
        "--require-hashes",
    ]
    options += [f"--platform=manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)]
    # only this wheelhouse: none of the machine's pip settings (indexes, find-links, caps)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "pip", *options, "--find-links", str(wheelhouse)]
        + ["--dest", str(dest), "-r", str(lock)],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "PIP_CONFIG_FILE": os.devnull},
    )


@pytest.fixture(scope="module")
def wheelhouse_built() -> Path:
    # An image that is up to date is not rebuilt, so a fresh clone may have the image and no
    # wheelhouse: build.sh --wheelhouse downloads it (a no-op when it is current).
    subprocess.run([str(BUILD_SH), "--wheelhouse", "python-cpu"], check=True)  # noqa: S603
    assert (WHEELHOUSE / ".complete").exists()
    return WHEELHOUSE


def test_a_wheel_that_is_not_the_locked_one_stops_the_build(tmp_path, wheelhouse_built):
    # given the wheelhouse build.sh downloads for the image, as hard links
    lock = RECIPE / "requirements.lock"
    wheelhouse = tmp_path / "wheelhouse"
    shutil.copytree(wheelhouse_built, wheelhouse, copy_function=os.link)
    assert pip_from_wheelhouse(wheelhouse, lock, tmp_path / "ok").returncode == 0

    # when a mirror serves one wheel altered by a single byte
    victim = next(wheelhouse.glob("jupyterhub-*.whl"))
    data = bytearray(victim.read_bytes())
    victim.unlink()  # a new file: the hard-linked original stays intact
    data[-100] ^= 0x01
    victim.write_bytes(bytes(data))
    result = pip_from_wheelhouse(wheelhouse, lock, tmp_path / "bad")

    # then pip refuses it, naming the hash it expected
    assert result.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr
    assert "jupyterhub" in result.stderr


def test_the_image_has_the_security_updates_from_the_hosts_mirror(client, image):
    # given the security mirror build.sh reads from this machine's apt configuration
    script = f'source <(sed -n "/^apt_mirror() {{/,/^}}/p" {BUILD_SH}); apt_mirror security'
    mirror = subprocess.run(  # noqa: S603
        ["/bin/bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert mirror, "this machine's apt has no bookworm-security: nothing to check against"

    # then the image's apt uses it and the build ran an upgrade against it
    assert f"deb {mirror} bookworm-security main" in run(client, "cat", "/etc/apt/sources.list")
    history = run(client, "cat", "/var/log/apt/history.log")
    assert "Commandline: apt-get upgrade" in history
