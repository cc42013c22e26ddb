"""Celery tasks for model deployments: everything that talks to an engine or to Docker. Each
task takes an id, re-reads the state, and is safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from . import services
from .health import engine_probe
from .models import Replica

logger = logging.getLogger(__name__)
State = Replica.State


@shared_task(name="deployments.queue_advance", acks_late=True)
def queue_advance_task() -> list[int]:
    return services.replicas_queue_advance()


@shared_task(name="deployments.health_probe")
def health_probe_task() -> dict[str, int]:
    """Probe every replica that has an address and may serve (Celery beat, every
    LLM_HEALTH_INTERVAL): `GET {base_url}/models` with its key, a short timeout."""
    timeout = min(3.0, max(0.5, settings.LLM_HEALTH_INTERVAL / 3))
    probed = changed = 0
    replicas = Replica.objects.filter(
        state__in=(State.STARTING, State.READY, State.UNHEALTHY)
    ).exclude(base_url="")
    for replica_id, base_url, api_key in replicas.values_list("pk", "base_url", "api_key"):
        failure = engine_probe(base_url=base_url, api_key=api_key, timeout=timeout)
        probed += 1
        if services.replica_probe_record(replica_id=replica_id, failure=failure):
            changed += 1
    return {"probed": probed, "changed": changed}
