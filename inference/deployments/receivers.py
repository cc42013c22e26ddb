"""What deployments do when something below them changes: devices released by the allocator
(a sandbox or a replica ended) move the line of replicas waiting for GPUs, after the commit."""

from django.dispatch import receiver

from sandboxes.gpus.services import gpus_released
from sandboxes.jobs import enqueue_after_commit


@receiver(gpus_released)
def _gpus_released(sender, *, uuids, **kwargs):
    enqueue_after_commit("deployments.queue_advance")
