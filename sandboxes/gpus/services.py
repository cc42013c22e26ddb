"""The only code that creates or ends GPU allocations, and the inventory sync.

Allocation is designed for races: free devices are read with `FOR UPDATE SKIP LOCKED` (two
launches never wait on, or take, the same row), and the partial unique constraint on open
allocations refuses a second holder even if a bug slipped past the locks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record

from .backends import GpuBackend, backend_from_setting
from .models import GpuAllocation, GpuDevice, GpuWait

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


# Sent after `gpu_release` ended open allocations (inside the caller's transaction), with the
# device UUIDs: the model deployments, on the floor above, move their line of waiting replicas
# (their receiver queues a task after the commit). Nothing here knows who listens.
gpus_released = Signal()


def _holder(sandbox, replica) -> dict:
    if (sandbox is None) == (replica is None):
        raise TypeError("give exactly one of sandbox= and replica=")
    return {"sandbox": sandbox} if sandbox is not None else {"replica": replica}


def _overlapping_kind(*, model: str, mig_profile: str) -> Q:
    """Waits that could take the same devices as a request for `model` ('' = any model)."""
    same = Q(mig_profile=mig_profile)
    return same & (Q(model=model) | Q(model="")) if model else same


def replica_waiting_ahead(*, since, model: str = "", mig_profile: str = "") -> bool:
    """A model replica has waited for devices of an overlapping kind since before `since`."""
    return GpuWait.objects.filter(
        _overlapping_kind(model=model, mig_profile=mig_profile), queued_at__lt=since
    ).exists()


def gpu_allocate(
    *,
    sandbox=None,
    replica=None,
    count: int,
    model: str = "",
    mig_profile: str = "",
) -> list[str]:
    """Give `count` free matching devices to `sandbox` or to `replica` (exactly one); all or
    nothing.

    Returns the device UUIDs, or [] when not enough are free right now (the caller queues). A
    sandbox is also refused while a model replica that came before it waits for devices of an
    overlapping kind (GpuWait): first come, first served across both lines. Must run inside the
    caller's transaction, so the allocation and the holder's new state commit together.
    """
    holder = _holder(sandbox, replica)
    if count <= 0:
        return []
    if sandbox is not None:
        since = sandbox.queued_at or timezone.now()
        if replica_waiting_ahead(since=since, model=model, mig_profile=mig_profile):
            return []
    candidates = GpuDevice.objects.free().of_kind(model=model, mig_profile=mig_profile)
    devices = list(candidates.order_by("index", "uuid").select_for_update(skip_locked=True)[:count])
    if len(devices) < count:
        return []
    try:
        with transaction.atomic():
            GpuAllocation.objects.bulk_create(
                [GpuAllocation(device=device, **holder) for device in devices]
            )
    except IntegrityError:
        # Another transaction took one of them between our read and our insert (possible only
        # on a database without row locks): nothing was given, the caller queues.
        logger.info("gpu_allocate lost a race for %s", holder)
        return []
    return [device.uuid for device in devices]


def gpu_release(*, sandbox=None, replica=None) -> list[str]:
    """End the holder's open allocations. Idempotent: a second call releases nothing."""
    holder = _holder(sandbox, replica)
    open_allocations = GpuAllocation.objects.filter(**holder, released_at__isnull=True)
    uuids = list(open_allocations.values_list("device__uuid", flat=True))
    open_allocations.update(released_at=timezone.now(), updated_at=timezone.now())
    if uuids:
        gpus_released.send(sender=GpuAllocation, uuids=uuids)
    return uuids


def gpu_wait_join(*, replica, count: int, model: str = "", mig_profile: str = "", queued_at):
    """Put a model replica in line for devices (idempotent: its place is kept)."""
    GpuWait.objects.get_or_create(
        replica=replica,
        defaults={
            "count": count,
            "model": model,
            "mig_profile": mig_profile,
            "queued_at": queued_at,
        },
    )


def gpu_wait_leave(*, replica) -> bool:
    """Take a model replica out of the line (it got its devices, or stopped waiting)."""
    deleted, _ = GpuWait.objects.filter(replica=replica).delete()
    return bool(deleted)
