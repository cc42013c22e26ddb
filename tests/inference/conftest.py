"""Fixtures shared by the model API's tests: a model store holding the two starter models, and
real llama.cpp engines (`python -m llama_cpp.server`) serving them on free loopback ports.

The engines are started once per test session, on first use, and stopped (by PID) at its end.
Each has its own bearer secret, as a deployment's replica does. They run with
`--interrupt_requests false` (the default lets a second request cut off the stream in flight,
docs/notes/MODELS.md §7), a small context (512 tokens: little memory, and easy overflow tests)
and one thread for the chat model (two engines share CI's two cores).
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from inference.catalogue.starter_models import (
    MINILM_NAME,
    TINY_CHAT_NAME,
    starter_model_get,
    starter_models_prepare,
)

ENGINE_START_TIMEOUT_SECONDS = 60
_START_ATTEMPTS = 3  # a free port can be taken between our probe and the engine's bind


@dataclass(frozen=True)
class LlamaEngine:
    """A running engine process: its OpenAI base URL, the model's name there, its key, its PID."""

    base_url: str  # http://127.0.0.1:PORT/v1
    alias: str
    api_key: str
    pid: int
    model_path: Path
    stderr_path: Path

    @property
    def root_url(self) -> str:
        """The server's root, for its routes outside /v1 (/extras/tokenize/count)."""
        return self.base_url.removesuffix("/v1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def engine_get_json(engine: LlamaEngine, path: str, *, api_key: str | None = None) -> dict:
    """GET `path` under the engine's base URL with its key (or `api_key`), parsed as JSON."""
    response = httpx.get(
        engine.base_url + path,
        headers={"Authorization": f"Bearer {api_key or engine.api_key}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def _ready(base_url: str, api_key: str) -> bool:
    try:
        response = httpx.get(
            f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=2
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def engine_stop(process: subprocess.Popen) -> None:
    """Stop an engine started by engine_start, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


_stop = engine_stop  # the name other tests imported first


def _stderr_tail(path: Path, limit: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-limit:] or "(nothing)"


def engine_start(
    *, model_path: Path, alias: str, workdir: Path, extra_args: tuple[str, ...] = ()
) -> tuple[LlamaEngine, subprocess.Popen]:
    """Start `python -m llama_cpp.server` on a free port and wait until `/v1/models` answers
    with its key; fail the test session with the engine's stderr when it does not within
    ENGINE_START_TIMEOUT_SECONDS."""
    api_key = secrets.token_hex(24)  # hex: never begins with "-" (read as an option)
    failures = []
    for attempt in range(_START_ATTEMPTS):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        stderr_path = workdir / f"{alias}-engine-{attempt}.stderr"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api_key",
            api_key,
            "--n_ctx",
            "512",
            "--interrupt_requests",
            "false",
            *extra_args,
        ]
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 (our own interpreter, fixed arguments)
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        deadline = time.monotonic() + ENGINE_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if _ready(base_url, api_key):
                engine = LlamaEngine(
                    base_url=base_url,
                    alias=alias,
                    api_key=api_key,
                    pid=process.pid,
                    model_path=model_path,
                    stderr_path=stderr_path,
                )
                return engine, process
            time.sleep(0.1)
        exited = process.poll() is not None
        _stop(process)
        failures.append(
            f"attempt {attempt + 1} on port {port}: "
            + (f"exited with {process.returncode}" if exited else "no answer")
            + f"; its output:\n{_stderr_tail(stderr_path)}"
        )
        if not exited:
            break  # it ran but never answered: another port will not help
    pytest.fail(
        f"The llama.cpp engine for {alias} ({model_path}) did not start within "
        f"{ENGINE_START_TIMEOUT_SECONDS} s.\n" + "\n".join(failures),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """A model store (a temporary folder) holding both starter models, written as
    `manage.py models_prepare` writes them."""
    store = tmp_path_factory.mktemp("model-store")
    starter_models_prepare(store_dir=store)
    return store


@pytest.fixture
def model_store_settings(model_store, settings) -> Path:
    """settings.MODEL_STORE_DIR pointed at the session's model store, for this test."""
    settings.MODEL_STORE_DIR = model_store
    return model_store


def _engine_fixture(model_store, tmp_path_factory, *, name: str, extra_args: tuple[str, ...]):
    model_path = model_store / starter_model_get(name).weights_path
    workdir = tmp_path_factory.mktemp(f"engine-{name}")
    engine, process = engine_start(
        model_path=model_path, alias=name, workdir=workdir, extra_args=extra_args
    )
    try:
        yield engine
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def llama_chat_engine(model_store, tmp_path_factory):
    """The tiny chat model served by a real llama.cpp engine (alias `tiny-chat`)."""
    yield from _engine_fixture(
        model_store,
        tmp_path_factory,
        name=TINY_CHAT_NAME,
        extra_args=("--n_threads", "1", "--verbose", "false"),
    )


@pytest.fixture(scope="session")
def llama_embedding_engine(model_store, tmp_path_factory):
    """MiniLM served for embeddings by a real llama.cpp engine (alias `minilm-embed`)."""
    yield from _engine_fixture(
        model_store,
        tmp_path_factory,
        name=MINILM_NAME,
        extra_args=("--embedding", "true", "--verbose", "false"),
    )
