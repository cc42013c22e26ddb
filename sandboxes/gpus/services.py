"""The only code that creates or ends GPU allocations, and the inventory sync.

Allocation is designed for races: free devices are read with `FOR UPDATE SKIP LOCKED` (two
launches never wait on, or take, the same row), and the partial unique constraint on open
allocations refuses a second holder even if a bug slipped past the locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record

from .backends import GpuBackend, backend_from_setting
from .models import GpuAllocation, GpuDevice

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InventorySync:
    backend: str
    simulated: bool
    added: int
    updated: int
    missing: int


def inventory_sync(*, backend: GpuBackend | None = None) -> InventorySync:
    """Record what the backend sees: new devices are added, known ones refreshed, and devices
    it no longer reports are marked missing (never deleted: allocations point at them)."""
    backend = backend or backend_from_setting()
    discovered = backend.discover()
    now = timezone.now()
    added = updated = 0
    with transaction.atomic():
        known = {d.uuid: d for d in GpuDevice.objects.select_for_update().order_by("pk")}
        by_uuid: dict[str, GpuDevice] = {}
        for found in sorted(discovered, key=lambda d: d.mig_parent_uuid is not None):
            values = {
                "index": found.index,
                "model": found.model,
                "memory_mib": found.memory_mib,
                "mig_enabled": found.mig_enabled,
                "mig_profile": found.mig_profile,
                "mig_parent": by_uuid.get(found.mig_parent_uuid or ""),
                "health": GpuDevice.Health.HEALTHY if found.healthy else GpuDevice.Health.UNHEALTHY,
                "simulated": backend.simulated,
                "last_seen_at": now,
            }
            device = known.get(found.uuid)
            if device is None:
                device = GpuDevice.objects.create(uuid=found.uuid, **values)
                added += 1
            else:
                for field, value in values.items():
                    setattr(device, field, value)
                device.save(update_fields=[*values, "updated_at"])
                updated += 1
            by_uuid[found.uuid] = device
        gone = [uuid for uuid in known if uuid not in by_uuid]
        missing = GpuDevice.objects.filter(uuid__in=gone).exclude(health=GpuDevice.Health.MISSING)
        missing_count = missing.update(health=GpuDevice.Health.MISSING, updated_at=now)
        if added or missing_count:
            audit_record(
                actor=None,
                action=AuditAction.GPUS_INVENTORY_CHANGED,
                data={
                    "backend": backend.name,
                    "added": added,
                    "missing": missing_count,
                },
            )
    return InventorySync(backend.name, backend.simulated, added, updated, missing_count)


def gpu_allocate(*, sandbox, count: int, model: str = "", mig_profile: str = "") -> list[str]:
    """Give `count` free matching devices to `sandbox`; all or nothing.

    Returns the device UUIDs, or [] when not enough are free right now (the caller queues).
    Must run inside the caller's transaction, so the allocation and the sandbox's new state
    commit together.
    """
    if count <= 0:
        return []
    candidates = GpuDevice.objects.free().of_kind(model=model, mig_profile=mig_profile)
    devices = list(candidates.order_by("index", "uuid").select_for_update(skip_locked=True)[:count])
    if len(devices) < count:
        return []
    try:
        with transaction.atomic():
            GpuAllocation.objects.bulk_create(
                [GpuAllocation(device=device, sandbox=sandbox) for device in devices]
            )
    except IntegrityError:
        # Another transaction took one of them between our read and our insert (possible only
        # on a database without row locks): nothing was given, the caller queues.
        logger.info("gpu_allocate lost a race for sandbox %s", sandbox.pk)
        return []
    return [device.uuid for device in devices]


def gpu_release(*, sandbox) -> list[str]:
    """End the sandbox's open allocations. Idempotent: a second call releases nothing."""
    open_allocations = GpuAllocation.objects.filter(sandbox=sandbox, released_at__isnull=True)
    uuids = list(open_allocations.values_list("device__uuid", flat=True))
    open_allocations.update(released_at=timezone.now(), updated_at=timezone.now())
    return uuids
