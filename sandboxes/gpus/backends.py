"""Where the inventory comes from: NVML on a GPU host, or a simulated set where there is none.

A backend answers one question, `discover()`: which devices exist now. The simulated backend is
explicit (`SANDBOX_GPU_BACKEND=simulated:4xH100-80GB`) and every device it reports is marked
simulated, so neither the UI nor the API can pass it off as hardware.
"""

from __future__ import annotations

import re
import socket
import uuid
from dataclasses import dataclass
from typing import Protocol

import pynvml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class DiscoveredGpu:
    uuid: str
    index: int
    model: str
    memory_mib: int
    healthy: bool = True
    mig_enabled: bool = False
    mig_parent_uuid: str | None = None
    mig_profile: str = ""


class GpuBackend(Protocol):
    name: str
    simulated: bool

    def discover(self) -> list[DiscoveredGpu]: ...


class GpuBackendUnavailable(Exception):
    """The backend cannot read the devices (no driver, driver error)."""


# --- NVML -----------------------------------------------------------------------------------

_MIB = 1024 * 1024
_MIG_NAME = re.compile(r"MIG (\S+)$")


class NvmlBackend:
    """Real GPUs through NVML (nvidia-ml-py). `nvml` is the pynvml module, or a stand-in that
    replays a recording of it (tests)."""

    name = "nvml"
    simulated = False

    def __init__(self, nvml=None):
        self.nvml = pynvml if nvml is None else nvml

    def discover(self) -> list[DiscoveredGpu]:
        n = self.nvml
        try:
            n.nvmlInit()
        except n.NVMLError as exc:
            raise GpuBackendUnavailable(f"NVML could not start: {exc}") from exc
        try:
            found = []
            for index in range(n.nvmlDeviceGetCount()):
                handle = n.nvmlDeviceGetHandleByIndex(index)
                found.extend(self._device(index, handle))
            return found
        finally:
            n.nvmlShutdown()

    def _device(self, index: int, handle) -> list[DiscoveredGpu]:
        n = self.nvml
        gpu_uuid = _text(n.nvmlDeviceGetUUID(handle))
        name = _text(n.nvmlDeviceGetName(handle))
        memory_mib = n.nvmlDeviceGetMemoryInfo(handle).total // _MIB
        healthy = self._healthy(handle)
        mig_on = self._mig_enabled(handle)
        devices = [
            DiscoveredGpu(
                uuid=gpu_uuid,
                index=index,
                model=name,
                memory_mib=memory_mib,
                healthy=healthy,
                mig_enabled=mig_on,
            )
        ]
        if mig_on:
            for slot in range(n.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    mig = n.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except n.NVMLError_NotFound:
                    continue  # an empty slot
                mig_name = _text(n.nvmlDeviceGetName(mig))
                profile = _MIG_NAME.search(mig_name)
                devices.append(
                    DiscoveredGpu(
                        uuid=_text(n.nvmlDeviceGetUUID(mig)),
                        index=index,
                        model=name,
                        memory_mib=n.nvmlDeviceGetMemoryInfo(mig).total // _MIB,
                        healthy=healthy,
                        mig_parent_uuid=gpu_uuid,
                        mig_profile=profile.group(1) if profile else mig_name,
                    )
                )
        return devices

    def _healthy(self, handle) -> bool:
        """A device that cannot report its utilisation is lost or broken: hand it to nobody."""
        try:
            self.nvml.nvmlDeviceGetUtilizationRates(handle)
        except self.nvml.NVMLError:
            return False
        return True

    def _mig_enabled(self, handle) -> bool:
        try:
            current, _pending = self.nvml.nvmlDeviceGetMigMode(handle)
        except self.nvml.NVMLError:  # not supported: not a MIG-capable GPU
            return False
        return current == self.nvml.NVML_DEVICE_MIG_ENABLE


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- Simulated ------------------------------------------------------------------------------

# Names and memory as NVML reports them for these products.
SIMULATED_MODELS = {
    "H100-80GB": ("NVIDIA H100 80GB HBM3", 81559),
    "H200-141GB": ("NVIDIA H200", 143771),
    "A100-80GB": ("NVIDIA A100-SXM4-80GB", 81920),
    "A100-40GB": ("NVIDIA A100-SXM4-40GB", 40960),
    "L40S-48GB": ("NVIDIA L40S", 46068),
    "L4-24GB": ("NVIDIA L4", 23034),
}
_SIMULATED_SPEC = re.compile(r"^(\d{1,2})x([A-Za-z0-9]+-\d+GB)$")
_SIMULATED_NAMESPACE = uuid.UUID("8f3f7a52-3f0e-4b8e-9d53-2a3c2b8f6e10")


class SimulatedBackend:
    """A fixed set of pretend GPUs, described like `4xH100-80GB` or `2xH100-80GB,2xL4-24GB`.

    UUIDs are derived from the host name and the position, so they stay the same across
    restarts (allocations survive a restart of the portal) and differ between hosts.
    """

    name = "simulated"
    simulated = True

    def __init__(self, spec: str, *, host: str | None = None):
        self.spec = spec
        self.host = host or socket.gethostname()
        self.groups = [self._group(part.strip()) for part in spec.split(",") if part.strip()]
        if not self.groups:
            raise ImproperlyConfigured("SANDBOX_GPU_BACKEND=simulated: needs e.g. 4xH100-80GB")

    @staticmethod
    def _group(part: str) -> tuple[int, str, int]:
        match = _SIMULATED_SPEC.match(part)
        if not match or match.group(2) not in SIMULATED_MODELS:
            known = ", ".join(SIMULATED_MODELS)
            raise ImproperlyConfigured(
                f"SANDBOX_GPU_BACKEND: cannot read {part!r}; write COUNTxMODEL with MODEL one of "
                f"{known} (for example simulated:4xH100-80GB)"
            )
        model, memory_mib = SIMULATED_MODELS[match.group(2)]
        return int(match.group(1)), model, memory_mib

    def discover(self) -> list[DiscoveredGpu]:
        devices = []
        for count, model, memory_mib in self.groups:
            for _ in range(count):
                index = len(devices)
                name = uuid.uuid5(_SIMULATED_NAMESPACE, f"{self.host}/{index}/{model}")
                devices.append(
                    DiscoveredGpu(
                        uuid=f"GPU-{name}", index=index, model=model, memory_mib=memory_mib
                    )
                )
        return devices


class NoGpuBackend:
    """A CPU-only deployment: no devices, and nothing pretends otherwise."""

    name = "none"
    simulated = False

    def discover(self) -> list[DiscoveredGpu]:
        return []


def backend_from_setting(value: str | None = None) -> GpuBackend:
    value = (value if value is not None else settings.SANDBOX_GPU_BACKEND).strip()
    if value == "nvml":
        return NvmlBackend()
    if value == "none":
        return NoGpuBackend()
    if value.startswith("simulated:"):
        return SimulatedBackend(value.removeprefix("simulated:"))
    raise ImproperlyConfigured(
        f"SANDBOX_GPU_BACKEND={value!r}: use nvml, none, or simulated:<COUNT>x<MODEL>"
    )
