"""Fixtures of the deployment tests: a catalogue model, a programme manager, simulated GPUs,
and the deployments' Docker tasks recorded instead of run (the end-to-end tests run them)."""

import uuid
from decimal import Decimal

import pytest

from inference.catalogue.models import ServedModel
from sandboxes.gpus.backends import SimulatedBackend
from sandboxes.gpus.services import inventory_sync
from sandboxes.jobs import registered_task


def served_model(**fields) -> ServedModel:
    values = {
        "name": f"test-chat-{uuid.uuid4().hex[:8]}",
        "display_name": "Test chat",
        "task": ServedModel.Task.CHAT,
        "engine": ServedModel.Engine.LLAMA_CPP,
        "weights_path": "starter/tiny-chat.gguf",
        "licence": "Apache-2.0",
        "context_length": 512,
        "input_price": Decimal("1.500"),
        "output_price": Decimal("2.250"),
    }
    values.update(fields)
    return ServedModel.objects.create(**values)


def gpus(spec: str = "2xH100-80GB") -> None:
    inventory_sync(backend=SimulatedBackend(spec, host="test-host"))


class Recorder:
    """Stands in for a Celery task's `delay`: each call is kept as (name, args)."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def delay(self, *args, **kwargs):
        self.calls.append((self.name, args))


def record_tasks(monkeypatch, *names: str) -> list:
    calls: list = []
    for name in names:
        task = registered_task(name)
        monkeypatch.setattr(task, "delay", Recorder(name, calls).delay)
    return calls


@pytest.fixture
def manager(programme_manager_without_mfa):
    return programme_manager_without_mfa


@pytest.fixture
def model(db):
    return served_model()


@pytest.fixture
def engine_images(settings):
    settings.LLM_ENGINE_IMAGES = {"llama.cpp": "nac/llm-llamacpp:test", "vllm": "nac/llm-vllm:test"}
    return settings.LLM_ENGINE_IMAGES


@pytest.fixture
def docker_tasks(monkeypatch, engine_images):
    """The container start and stop tasks, recorded: these tests are about the portal's side."""
    return record_tasks(monkeypatch, "deployments.replica_start", "deployments.replica_stop")
