"""The sandbox image nac/python-cpu, built by `make images`, in a real docker engine.

The hub's spawner starts this image as the user's server: it must run as jovyan (uid 1000) by
default, carry the same JupyterHub as the hub, have the scientific stack, let uid 1000 write to a
fresh home volume, and say (by label) which recipe it was built from.
"""

import hashlib
import uuid
from pathlib import Path

import docker
import jupyterhub
import pytest

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "sandboxes" / "images" / "python-cpu"
IMAGE = "nac/python-cpu:2026.11"


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
