"""Reads of deployments and replicas: where the gateway sends a model's requests, and what
serving costs in GPU time."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from .models import Deployment, Replica


@dataclass(frozen=True)
class ReplicaTarget:
    """One replica the gateway may send a request to. `api_key` is the engine's own bearer
    secret: it goes upstream in the Authorization header and nowhere else."""

    replica_id: int
    public_id: uuid.UUID
    base_url: str
    api_key: str


def replicas_serving(*, model) -> list[ReplicaTarget]:
    """The READY replicas of the model's active deployment (a model instance or its pk), oldest
    first. An unhealthy, starting or stopping replica is never listed."""
    model_id = getattr(model, "pk", model)
    rows = (
        Replica.objects.filter(
            deployment__model_id=model_id,
            deployment__state=Deployment.State.ACTIVE,
            state=Replica.State.READY,
        )
        .exclude(base_url="")
        .order_by("pk")
        .values_list("pk", "public_id", "base_url", "api_key")
    )
    return [ReplicaTarget(*row) for row in rows]


def deployment_active_for(*, model) -> Deployment | None:
    """The model's one active deployment, if it has one."""
    model_id = getattr(model, "pk", model)
    return Deployment.objects.filter(model_id=model_id, state=Deployment.State.ACTIVE).first()


@dataclass(frozen=True)
class ServingCost:
    """The GPU time one model's replicas held in a period: what serving it cost the platform."""

    model_id: int
    model_name: str
    gpu_seconds: int
    replica_seconds: int


def serving_gpu_seconds(*, start: dt.datetime, end: dt.datetime) -> list[ServingCost]:
    """GPU-seconds held by each model's replicas within [start, end), most first.

    A replica holds its GPUs from `started_at` (allocation) to `stopped_at` (release), or to now
    while it still holds them; only the part inside the period counts. A CPU replica (no GPUs)
    has replica-seconds but no GPU-seconds. Whole seconds, rounded down per model."""
    if end <= start:
        return []
    now = timezone.now()
    rows = (
        Replica.objects.filter(started_at__isnull=False, started_at__lt=end)
        .filter(Q(stopped_at__isnull=True) | Q(stopped_at__gt=start))
        .values_list(
            "deployment__model_id",
            "deployment__model__name",
            "started_at",
            "stopped_at",
            "gpu_uuids",
        )
    )
    totals: dict[int, list] = {}
    for model_id, name, started_at, stopped_at, gpu_uuids in rows:
        held_from = max(started_at, start)
        held_to = min(stopped_at or now, end)
        if held_to <= held_from:
            continue
        micro = (held_to - held_from) // dt.timedelta(microseconds=1)
        entry = totals.setdefault(model_id, [name, 0, 0])
        entry[1] += micro * len(gpu_uuids or [])
        entry[2] += micro
    costs = [
        ServingCost(model_id, name, gpu_micro // 1_000_000, replica_micro // 1_000_000)
        for model_id, (name, gpu_micro, replica_micro) in totals.items()
    ]
    return sorted(costs, key=lambda cost: (-cost.gpu_seconds, cost.model_name))
