"""`manage.py gpus_sync`: read the GPU inventory now (make run does it at start; Celery beat
keeps it fresh)."""

from django.core.management.base import BaseCommand, CommandError

from sandboxes.gpus.backends import GpuBackendUnavailable
from sandboxes.gpus.services import inventory_sync


class Command(BaseCommand):
    help = "Discover the GPUs (NVML, or the simulated set SANDBOX_GPU_BACKEND names)."

    def handle(self, *args, **options):
        try:
            result = inventory_sync()
        except GpuBackendUnavailable as exc:
            raise CommandError(
                f"{exc}. Set SANDBOX_GPU_BACKEND=none or simulated:4xH100-80GB."
            ) from exc
        kind = "SIMULATED" if result.simulated else result.backend
        self.stdout.write(
            f"GPU inventory ({kind}): {result.added} added, {result.updated} refreshed, "
            f"{result.missing} missing"
        )
