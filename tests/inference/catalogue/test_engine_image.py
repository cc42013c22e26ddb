"""The llama.cpp engine image nac/llm-llamacpp, built by `make images`, in a real Docker engine.

A replica is a container of this image (inference.deployments.runner): the server itself as the
entrypoint, the model store mounted read-only at /models, the replica's own key. It must serve a
model from that mount, answer only with its key, run as a user that is not root, and carry no
model of its own.
"""

import hashlib
import re
import time
from pathlib import Path

import docker
import httpx
import pytest
from django.conf import settings
from docker.types import Mount

from tests.inference.conftest import free_port

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "inference" / "images" / "llm-llamacpp"
IMAGE = settings.LLM_ENGINE_IMAGES["llama.cpp"]
START_TIMEOUT_SECONDS = 60
CHAT_REQUEST = {
    "model": "tiny-chat",
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 4,
}


def recipe_hash(folder: Path) -> str:
    """build.sh's definition: sha256 over "<sha256>  ./<path>" lines, sorted bytewise."""
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


def _engine_run(client, store: Path, *, api_key: str, port: int):
    """A container as the runner starts one: read-only root, /tmp a tmpfs, no capabilities,
    the store read-only at /models, the server's arguments as the command."""
    return client.containers.run(
        IMAGE,
        [
            "--model",
            "/models/starter/tiny-chat.gguf",
            "--model_alias",
            "tiny-chat",
            "--host",
            "0.0.0.0",  # noqa: S104 - inside the container's own network namespace
            "--port",
            "8000",
            "--api_key",
            api_key,
            "--n_ctx",
            "512",
            "--n_threads",
            "1",
            "--interrupt_requests",
            "false",
        ],
        detach=True,
        read_only=True,
        tmpfs={"/tmp": "size=64m"},  # noqa: S108 - the container's /tmp, as the runner gives
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mounts=[Mount("/models", str(store), type="bind", read_only=True)],
        ports={"8000/tcp": ("127.0.0.1", port)},
        labels={"nac.test": "test_engine_image"},
    )


@pytest.fixture(scope="module")
def engine(client, image, model_store):
    api_key = "engine-image-test-key"
    port = free_port()
    container = _engine_run(client, model_store, api_key=api_key, port=port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "exited":
                break
            try:
                answer = httpx.get(
                    f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=2
                )
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            answer = None
        if container.status == "exited" or answer is None or answer.status_code != 200:
            logs = container.logs().decode(errors="replace")[-4000:]
            pytest.fail(f"{IMAGE} did not serve within {START_TIMEOUT_SECONDS} s:\n{logs}")
        yield container, base_url, api_key
    finally:
        container.remove(force=True)


def test_the_image_serves_a_model_from_the_read_only_store_with_its_key(engine):
    # given
    _, base_url, api_key = engine
    headers = {"Authorization": f"Bearer {api_key}"}

    # when
    listed = httpx.get(f"{base_url}/models", headers=headers, timeout=10)
    chat = httpx.post(
        f"{base_url}/chat/completions",
        headers=headers,
        json={
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        },
        timeout=30,
    )

    # then
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["tiny-chat"]
    assert chat.status_code == 200
    assert 1 <= chat.json()["usage"]["completion_tokens"] <= 4 + 1


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "engine-image-test-key"])
def test_attacker_the_image_refuses_a_request_without_its_key(engine, authorization):
    # given: no key, another key, and the right key without the Bearer scheme
    _, base_url, _ = engine
    headers = {"Authorization": authorization} if authorization else {}

    # when
    listed = httpx.get(f"{base_url}/models", headers=headers, timeout=10)
    chat = httpx.post(
        f"{base_url}/chat/completions",
        headers=headers,
        json={
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
        },
        timeout=30,
    )

    # then
    assert listed.status_code == 401
    assert chat.status_code == 401


def test_the_image_runs_as_a_user_that_is_not_root(engine, image):
    # given
    container, _, _ = engine

    # when
    uid = container.exec_run(["id", "-u"]).output.decode().strip()
    gid = container.exec_run(["id", "-g"]).output.decode().strip()

    # then
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert (uid, gid) == ("10001", "10001")


def test_attacker_the_engine_cannot_write_to_the_model_store(engine, model_store):
    # given
    container, _, _ = engine
    before = sorted(p.name for p in (model_store / "starter").iterdir())

    # when
    written = container.exec_run(["python", "-c", "open('/models/starter/x', 'w')"])

    # then
    assert written.exit_code != 0
    assert b"Read-only file system" in written.output
    assert sorted(p.name for p in (model_store / "starter").iterdir()) == before


def test_the_image_has_no_model_inside(client, image):
    # when: the image alone, without the store mounted, searched as root (every folder)
    found = client.containers.run(
        IMAGE,
        ["/", "-xdev", "(", "-name", "*.gguf", "-o", "-name", "*.safetensors", ")", "-print"],
        entrypoint="find",
        user="0",
        remove=True,
    )
    models_dir = client.containers.run(IMAGE, ["-A", "/models"], entrypoint="ls", remove=True)

    # then
    assert found.decode().strip() == ""
    assert models_dir.decode().strip() == ""


def test_the_image_was_built_from_this_recipe(image):
    # then: `make images` rebuilds it whenever the recipe changes
    assert image.labels["nac.recipe-hash"] == recipe_hash(RECIPE)
    assert image.labels["nac.image"] == "llm-llamacpp"
    assert image.attrs["Config"]["Entrypoint"] == [
        "tini",
        "--",
        "python",
        "-m",
        "llama_cpp.server",
    ]


def _pins(text: str) -> dict[str, str]:
    """canonical name -> version of every `name==version` line (PEP 503 names)."""
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)", text, re.M)
    }


def test_the_image_runs_the_versions_the_portals_tests_run():
    # given
    requirements = (RECIPE / "requirements.txt").read_bytes()
    image_lock = (RECIPE / "requirements.lock").read_text()
    portal_lock = _pins((REPO / ".ci" / "requirements.lock").read_text())

    # then: every wheel of the image at the portal lock's version, from a current image lock
    differing = {
        name: (version, portal_lock.get(name))
        for name, version in _pins(requirements.decode()).items()
        if portal_lock.get(name) != version
    }
    assert differing == {}
    assert f"# requirements.txt sha256: {hashlib.sha256(requirements).hexdigest()}" in image_lock
    assert _pins(image_lock) == _pins(requirements.decode())
    # and llama-cpp-python is not downloaded: it is the wheel built on the host
    assert "llama-cpp-python" not in _pins(requirements.decode())


def test_the_image_runs_the_llama_cpp_python_of_the_portals_lock(client, image):
    # given
    pinned = _pins((REPO / ".ci" / "requirements.lock").read_text())["llama-cpp-python"]

    # when
    version = client.containers.run(
        IMAGE,
        ["-c", "import llama_cpp; print(llama_cpp.__version__)"],
        entrypoint="python",
        remove=True,
    )

    # then
    assert version.decode().strip() == pinned
