"""What the hardware says at a tick: each sandbox container's CPU and memory (Docker Engine stats
API) and each held GPU's utilisation, memory, power and temperature (NVML, or the simulated
backend). Telemetry, not billing: a reading that cannot be taken is None, never a guess, and a
tick goes on without it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

from django.core.cache import cache

from sandboxes.gpus.backends import GpuBackend, NvmlBackend
from sandboxes.launcher.docker_client import client

logger = logging.getLogger(__name__)
_MIB = 1024 * 1024
_CPU_KEY = "metering:cpu:{}"  # the previous CPU counters of a container, for the next delta
STATS_THREADS = 8


@dataclass(frozen=True)
class ContainerReading:
    cpu_pct: float | None  # 100 = one core busy
    memory_used_mib: int | None
    memory_limit_mib: int | None


@dataclass(frozen=True)
class GpuReading:
    util_pct: float | None
    memory_used_mib: int | None
    power_w: float | None
    temperature_c: int | None


# --- Containers -------------------------------------------------------------------------------


def containers_read(public_ids: set[str]) -> dict[str, ContainerReading]:
    """Sandbox public id → its container's reading, for the running containers among them.

    One list call, then one one-shot stats call per container (in a small thread pool; a
    one-shot read does not wait a second for a second sample). CPU is the change in the
    container's CPU time since the previous tick, over the change in the host's, so the first
    tick of a container has memory but no CPU yet.
    """
    if not public_ids:
        return {}
    try:
        with closing(client()) as engine:
            containers = {
                c.labels["nac.sandbox"]: c.id
                for c in engine.containers.list(filters={"label": "nac.sandbox"})
                if c.labels.get("nac.sandbox") in public_ids
            }
            if not containers:
                return {}

            def stats(container_id):
                try:
                    return engine.api.stats(container_id, stream=False, one_shot=True)
                except Exception:  # a container that stopped meanwhile: no reading
                    logger.info("no stats for container %s", container_id, exc_info=True)
                    return None

            with ThreadPoolExecutor(max_workers=min(STATS_THREADS, len(containers))) as pool:
                raw = dict(zip(containers, pool.map(stats, containers.values()), strict=True))
    except Exception:
        logger.warning("could not read container stats from Docker", exc_info=True)
        return {}
    previous = cache.get_many([_CPU_KEY.format(cid) for cid in containers.values()])
    remember, readings = {}, {}
    for public_id, data in raw.items():
        if not data:
            continue
        key = _CPU_KEY.format(containers[public_id])
        counters = _cpu_counters(data)
        remember[key] = counters
        readings[public_id] = ContainerReading(
            cpu_pct=_cpu_pct(previous.get(key), counters),
            memory_used_mib=_memory_used_mib(data),
            memory_limit_mib=_memory_limit_mib(data),
        )
    if remember:
        cache.set_many(remember, timeout=3600)
    return readings


def _cpu_counters(data: dict) -> tuple[int, int, int] | None:
    cpu = data.get("cpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [])
    if total is None or system is None:
        return None
    return int(total), int(system), int(online or 1)


def _cpu_pct(before, after) -> float | None:
    if not before or not after:
        return None
    cpu_delta, system_delta = after[0] - before[0], after[1] - before[1]
    if cpu_delta < 0 or system_delta <= 0:
        return None  # the container restarted: counters began again
    return round(cpu_delta / system_delta * after[2] * 100, 1)


def _memory_used_mib(data: dict) -> int | None:
    memory = data.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    stats = memory.get("stats") or {}
    # What `docker stats` shows: usage less the page cache the kernel can drop.
    cache_bytes = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    return max(0, int(usage) - int(cache_bytes)) // _MIB


def _memory_limit_mib(data: dict) -> int | None:
    limit = (data.get("memory_stats") or {}).get("limit")
    return int(limit) // _MIB if limit else None


# --- GPUs ----------------------------------------------------------------------------------


def nvml_read(backend: NvmlBackend, uuids: list[str]) -> dict[str, GpuReading]:
    """Each device by UUID (never by index). A MIG instance has no utilisation, power or
    temperature of its own in NVML: utilisation stays unknown (its parent's would be the other
    instances' work too), power and temperature are its parent GPU's, which is what it heats."""
    n = backend.nvml
    if not uuids:
        return {}
    try:
        n.nvmlInit()
    except n.NVMLError:
        logger.warning("NVML could not start: no GPU readings this tick", exc_info=True)
        return {}
    readings = {}
    try:
        for gpu_uuid in uuids:
            try:
                handle = n.nvmlDeviceGetHandleByUUID(gpu_uuid)
            except n.NVMLError:
                logger.warning("GPU %s not found by NVML", gpu_uuid)
                continue
            whole = handle
            if gpu_uuid.startswith("MIG-"):
                whole = _optional(
                    n, lambda h=handle: n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
                )
            readings[gpu_uuid] = GpuReading(
                util_pct=_optional(
                    n, lambda h=handle: float(n.nvmlDeviceGetUtilizationRates(h).gpu)
                ),
                memory_used_mib=_optional(
                    n, lambda h=handle: n.nvmlDeviceGetMemoryInfo(h).used // _MIB
                ),
                power_w=_optional(n, lambda h=whole: round(n.nvmlDeviceGetPowerUsage(h) / 1000, 1)),
                temperature_c=_optional(
                    n, lambda h=whole: int(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
                ),
            )
    finally:
        n.nvmlShutdown()
    return readings


def _optional(n, read):
    """A reading, or None where the device does not support it (a MIG instance), a transient
    NVML error, or no parent handle to read from (TypeError)."""
    try:
        return read()
    except (n.NVMLError, TypeError):
        return None


# The simulated backend has no hardware to ask. It derives a believable GPU from the container's
# real CPU load, so the demo's charts move when the notebook works and rest when it idles.
SIMULATED_IDLE_W, SIMULATED_MAX_W = 70.0, 700.0


def simulated_read(
    devices: dict[str, tuple[int, float | None]], *, tick: int
) -> dict[str, GpuReading]:
    """`devices`: uuid → (total memory in MiB, the holder's CPU load as a fraction of one core,
    or None for a free device). `tick` seeds a small, repeatable wobble."""
    readings = {}
    for gpu_uuid, (memory_mib, load) in devices.items():
        wobble = _wobble(gpu_uuid, tick)
        busy = 0.0 if load is None else max(0.0, min(1.0, load))
        util = 0.0 if busy == 0 else min(100.0, round(100 * busy**0.7 + 4 * wobble, 1))
        held = load is not None
        used_fraction = (0.015 + 0.55 * busy) if held else 0.0
        readings[gpu_uuid] = GpuReading(
            util_pct=max(0.0, util),
            memory_used_mib=int(memory_mib * used_fraction) + (520 if held else 0),
            power_w=round(SIMULATED_IDLE_W + (SIMULATED_MAX_W - SIMULATED_IDLE_W) * util / 100, 1),
            temperature_c=int(round(31 + 0.45 * util + 1.5 * wobble)),
        )
    return readings


def _wobble(gpu_uuid: str, tick: int) -> float:
    """A number in [-1, 1] that changes smoothly from tick to tick and differs per device."""
    phase = int(hashlib.sha256(gpu_uuid.encode()).hexdigest()[:8], 16) % 628 / 100
    return math.sin(tick / 3 + phase)


def gpus_read(
    backend: GpuBackend, devices: dict[str, tuple[int, float | None]], *, tick: int
) -> dict[str, GpuReading]:
    if backend.simulated:
        return simulated_read(devices, tick=tick)
    if isinstance(backend, NvmlBackend):
        return nvml_read(backend, list(devices))
    return {}
