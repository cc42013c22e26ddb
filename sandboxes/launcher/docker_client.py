"""The few Docker Engine calls the portal makes itself (the hub's spawner makes the rest):
which sandbox containers exist, and removing a home volume when its owner asks."""

from __future__ import annotations

import logging
from contextlib import closing

import docker
from django.conf import settings

logger = logging.getLogger(__name__)


def client() -> docker.DockerClient:
    return docker.DockerClient(base_url=settings.DOCKER_URL, timeout=10)


def sandbox_containers() -> dict[str, str]:
    """Sandbox public id → container status, for every container the spawner labelled."""
    with closing(client()) as engine:
        containers = engine.containers.list(all=True, filters={"label": "nac.sandbox"})
        return {c.labels["nac.sandbox"]: c.status for c in containers}


def volume_remove(name: str) -> bool:
    with closing(client()) as engine:
        try:
            engine.volumes.get(name).remove()
        except docker.errors.NotFound:
            return False
    logger.info("removed home volume %s", name)
    return True
