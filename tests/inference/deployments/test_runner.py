"""What a replica's container is made of (no Docker needed): the engine's arguments, the
weights inside the model store, and a start refused before Docker is asked."""

import pytest
from django.test import TestCase

from inference.catalogue.models import ServedModel
from inference.deployments import runner, services
from inference.deployments.models import Deployment, Replica
from inference.deployments.tasks import replica_start_task
from sandboxes.gpus.models import GpuAllocation

from .conftest import gpus, served_model

pytestmark = pytest.mark.django_db

State = Replica.State


@pytest.fixture
def store(tmp_path, settings):
    (tmp_path / "starter").mkdir()
    (tmp_path / "starter" / "tiny-chat.gguf").write_bytes(b"GGUF")
    settings.MODEL_STORE_DIR = tmp_path
    return tmp_path


def replica_of(model, *, gpu_uuids=()):
    deployment = Deployment.objects.create(model=model, replicas_wanted=1)
    return Replica.objects.create(
        deployment=deployment, state=State.STARTING, api_key="k" * 43, gpu_uuids=list(gpu_uuids)
    )


def test_a_llama_cpp_replica_serves_its_catalogue_name_with_its_key(store, engine_images):
    model = served_model(name="qalam-chat")
    spec = runner.engine_spec(replica_of(model))
    assert spec.image == engine_images["llama.cpp"]
    assert spec.weights_in_container == "/models/starter/tiny-chat.gguf"
    assert spec.store_dir == str(store.resolve())
    args = runner.engine_args(spec)
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--model"] == "/models/starter/tiny-chat.gguf"
    assert pairs["--model_alias"] == "qalam-chat"
    assert pairs["--api_key"] == "k" * 43
    assert pairs["--port"] == str(runner.ENGINE_PORT)
    assert pairs["--n_ctx"] == "512"
    assert pairs["--interrupt_requests"] == "false"
    assert "--n_gpu_layers" not in pairs
    assert "--embedding" not in pairs


def test_gpus_and_embeddings_change_the_arguments(store, engine_images):
    model = served_model(task=ServedModel.Task.EMBEDDING, output_price=0)
    args = runner.engine_args(runner.engine_spec(replica_of(model, gpu_uuids=["GPU-a"])))
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--embedding"] == "true"
    assert pairs["--n_gpu_layers"] == "-1"


def test_vllm_is_started_as_its_openai_server(store, engine_images):
    model = served_model(name="big-chat", engine=ServedModel.Engine.VLLM)
    spec = runner.engine_spec(replica_of(model, gpu_uuids=["GPU-a", "GPU-b"]))
    assert spec.image == engine_images["vllm"]
    args = runner.engine_args(spec)
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--served-model-name"] == "big-chat"
    assert pairs["--api-key"] == "k" * 43
    assert pairs["--tensor-parallel-size"] == "2"
    assert pairs["--max-model-len"] == "512"


@pytest.mark.parametrize("weights_path", ["starter/missing.gguf", "starter/link.gguf"])
def test_weights_missing_or_outside_the_store_are_refused(
    store, engine_images, tmp_path_factory, weights_path
):
    outside = tmp_path_factory.mktemp("outside") / "secret.gguf"
    outside.write_bytes(b"secret")
    (store / "starter" / "link.gguf").symlink_to(outside)
    model = served_model(weights_path=weights_path)
    with pytest.raises(runner.EngineError):
        runner.engine_spec(replica_of(model))


def test_a_start_that_cannot_be_made_fails_the_replica_and_frees_its_gpus(
    store, engine_images, manager, monkeypatch
):
    # given a replica holding a GPU whose model's weights are not in the store
    gpus("1xH100-80GB")
    model = served_model(weights_path="starter/missing.gguf")
    calls = []
    monkeypatch.setattr(runner, "engine_container_run", lambda spec: calls.append(spec))
    with TestCase.captureOnCommitCallbacks(execute=False):
        deployment = services.deployment_create(
            model=model, gpus_per_replica=1, replicas=1, acting_user=manager
        )
    replica = deployment.replicas.get()
    assert GpuAllocation.objects.filter(replica=replica, released_at__isnull=True).exists()
    # when its start task runs
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert replica_start_task(replica.pk) == "failed"
    # then Docker was never asked, the replica failed with the reason, and the GPU is free
    assert calls == []
    replica.refresh_from_db()
    assert replica.state == State.FAILED
    assert "not in the model store" in replica.message
    assert not GpuAllocation.objects.filter(released_at__isnull=True).exists()
    # and a second run of the task does nothing
    assert replica_start_task(replica.pk) == "skipped"
