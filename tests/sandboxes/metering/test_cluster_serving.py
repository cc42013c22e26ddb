"""A GPU a model deployment's replica holds is shown held (by model serving) in the cluster's
first paint and in the tick's live message, not free."""

import pytest
from django.utils import timezone

from inference.catalogue.models import ServedModel
from inference.deployments.models import Deployment, Replica
from sandboxes.gpus.models import GpuAllocation, GpuDevice
from sandboxes.live import broadcast
from sandboxes.metering import services
from sandboxes.metering.selectors import cluster_snapshot
from tests.sandboxes.launcher.helpers import funded_founder, gpus

from .helpers import running

pytestmark = pytest.mark.django_db


def replica_holding(device: GpuDevice) -> Replica:
    model = ServedModel.objects.create(
        name="serving-check",
        display_name="Serving check",
        task=ServedModel.Task.CHAT,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path="starter/tiny-chat.gguf",
        licence="Apache-2.0",
        context_length=512,
        input_price=1,
        output_price=1,
    )
    deployment = Deployment.objects.create(model=model, gpus_per_replica=1, replicas_wanted=1)
    replica = Replica.objects.create(deployment=deployment, state=Replica.State.READY)
    GpuAllocation.objects.create(device=device, replica=replica)
    return replica


def tiles_by_uuid(message: dict) -> dict:
    return {tile["uuid"]: tile for tile in message["gpus"]}


def test_a_replicas_gpu_is_held_by_serving_in_the_snapshot_and_the_tick(enqueued, monkeypatch):
    gpus(3)
    sandbox, _run = running(funded_founder(hours=10), "gpu-1", ago=30)
    by_sandbox = GpuAllocation.objects.get(sandbox=sandbox, released_at__isnull=True).device
    for_replica, free = GpuDevice.objects.exclude(pk=by_sandbox.pk).order_by("index")[:2]
    replica_holding(for_replica)
    sent = []
    monkeypatch.setattr(broadcast, "send_after_commit", lambda messages: sent.extend(messages))

    services.tick(now=timezone.now())
    live = next(m for _group, m in sent if m["type"] == "cluster.gpus")

    for message in (cluster_snapshot(), live):
        tiles = tiles_by_uuid(message)
        assert tiles[for_replica.uuid]["holder"]["serving"] is True
        assert tiles[for_replica.uuid]["holder"]["sandbox"] is None
        assert tiles[by_sandbox.uuid]["holder"]["sandbox"] == str(sandbox.public_id)
        assert tiles[free.uuid]["holder"] is None
