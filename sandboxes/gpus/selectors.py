"""Reads of the GPU inventory: what exists, what is free, grouped as people choose them."""

from dataclasses import dataclass

from django.db.models import Count, Q

from .models import GpuAllocation, GpuDevice


@dataclass(frozen=True)
class ModelAvailability:
    model: str
    mig_profile: str
    memory_mib: int
    total: int
    free: int
    simulated: bool


def availability() -> list[ModelAvailability]:
    """Allocatable devices per model (and MIG profile): how many exist, how many are free."""
    open_allocation = Q(allocations__released_at__isnull=True)
    rows = (
        GpuDevice.objects.allocatable()
        .values("model", "mig_profile", "memory_mib", "simulated")
        .annotate(
            total=Count("pk", distinct=True), held=Count("allocations", filter=open_allocation)
        )
        .order_by("model", "mig_profile")
    )
    return [
        ModelAvailability(
            model=row["model"],
            mig_profile=row["mig_profile"],
            memory_mib=row["memory_mib"],
            total=row["total"],
            free=row["total"] - row["held"],
            simulated=row["simulated"],
        )
        for row in rows
    ]


def free_count(*, model: str = "", mig_profile: str = "") -> int:
    return GpuDevice.objects.free().of_kind(model=model, mig_profile=mig_profile).count()


def inventory_is_simulated() -> bool:
    return GpuDevice.objects.filter(simulated=True).exclude(health="missing").exists()


def devices_with_holders():
    """Every device with its open allocation's sandbox (one query each way, no N+1)."""
    devices = list(GpuDevice.objects.exclude(health=GpuDevice.Health.MISSING))
    held = {
        a.device_id: a
        for a in GpuAllocation.objects.filter(released_at__isnull=True).select_related(
            "sandbox__user", "sandbox__organisation"
        )
    }
    return [(device, held.get(device.pk)) for device in devices]


def uuids_held_by(*, sandbox) -> list[str]:
    return list(
        GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True)
        .order_by("device__index")
        .values_list("device__uuid", flat=True)
    )
