"""Record what NVML reports on a GPU host, and replay it where there is no GPU.

    python -m sandboxes.gpus.nvml_recording > tests/sandboxes/gpus/fixtures/<host>.json

The recording holds exactly the answers `NvmlBackend` asks for. `RecordedNvml` answers the same
calls from a recording, so the backend's code path is exercised without a driver (the boundary
we cannot have on CI), and re-checked against the real library on every GPU host.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pynvml


def record(nvml=None) -> dict:
    if nvml is None:
        nvml = pynvml
    nvml.nvmlInit()
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(_device(nvml, handle))
        return {
            "driver": _text(nvml.nvmlSystemGetDriverVersion()),
            "nvml": _text(nvml.nvmlSystemGetNVMLVersion()),
            "devices": devices,
        }
    finally:
        nvml.nvmlShutdown()


def _device(nvml, handle) -> dict:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    util = nvml.nvmlDeviceGetUtilizationRates(handle)
    try:
        mig_mode = list(nvml.nvmlDeviceGetMigMode(handle))
    except nvml.NVMLError:
        mig_mode = None
    mig = []
    if mig_mode and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE:
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                child = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError_NotFound:
                continue
            mig.append(
                {
                    "slot": slot,
                    "uuid": _text(nvml.nvmlDeviceGetUUID(child)),
                    "name": _text(nvml.nvmlDeviceGetName(child)),
                    "memory_total": nvml.nvmlDeviceGetMemoryInfo(child).total,
                }
            )
    return {
        "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
        "name": _text(nvml.nvmlDeviceGetName(handle)),
        "memory_total": memory.total,
        "memory_used": memory.used,
        "utilization": {"gpu": util.gpu, "memory": util.memory},
        "power_mw": nvml.nvmlDeviceGetPowerUsage(handle),
        "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        "mig_mode": mig_mode,
        "max_mig_devices": nvml.nvmlDeviceGetMaxMigDeviceCount(handle) if mig_mode else 0,
        "mig_devices": mig,
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RecordedNvml:
    """The part of pynvml's interface the backend uses, answering from a recording."""

    NVML_DEVICE_MIG_ENABLE = 1
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    class NVMLError_NotFound(NVMLError):  # noqa: N801 - pynvml's own name
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801
        pass

    class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801
        pass

    def __init__(self, recording: dict | None):
        self.recording = recording
        self.initialised = 0

    def nvmlInit(self):  # noqa: N802 - pynvml's names
        if self.recording is None:
            raise self.NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised += 1

    def nvmlShutdown(self):  # noqa: N802
        self.initialised -= 1

    def nvmlDeviceGetCount(self):  # noqa: N802
        return len(self.recording["devices"])

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return ("gpu", index)

    def _data(self, handle) -> dict:
        if handle[0] == "gpu":
            return self.recording["devices"][handle[1]]
        parent = self.recording["devices"][handle[1]]
        return next(m for m in parent["mig_devices"] if m["slot"] == handle[2])

    def nvmlDeviceGetUUID(self, handle):  # noqa: N802
        return self._data(handle)["uuid"]

    def nvmlDeviceGetName(self, handle):  # noqa: N802
        return self._data(handle)["name"]

    def nvmlDeviceGetMemoryInfo(self, handle):  # noqa: N802
        data = self._data(handle)
        return SimpleNamespace(
            total=data["memory_total"],
            used=data.get("memory_used", 0),
            free=data["memory_total"] - data.get("memory_used", 0),
        )

    def nvmlDeviceGetUtilizationRates(self, handle):  # noqa: N802
        data = self._data(handle)
        if data.get("lost"):
            raise self.NVMLError("GPU is lost")
        if handle[0] == "mig":  # NVML: not supported on a MIG device handle
            raise self.NVMLError_NotSupported("Not Supported")
        return SimpleNamespace(**data["utilization"])

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        for index, device in enumerate(self.recording["devices"]):
            if device["uuid"] == uuid:
                return ("gpu", index)
            for mig in device.get("mig_devices", []):
                if mig["uuid"] == uuid:
                    return ("mig", index, mig["slot"])
        raise self.NVMLError_NotFound("Not Found")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):  # noqa: N802
        return ("gpu", handle[1])

    def _whole_gpu_only(self, handle, key):
        if handle[0] == "mig":
            raise self.NVMLError_NotSupported("Not Supported")
        return self._data(handle)[key]

    def nvmlDeviceGetPowerUsage(self, handle):  # noqa: N802
        return self._whole_gpu_only(handle, "power_mw")

    def nvmlDeviceGetTemperature(self, handle, sensor):  # noqa: N802
        return self._whole_gpu_only(handle, "temperature_c")

    def nvmlDeviceGetMigMode(self, handle):  # noqa: N802
        mode = self._data(handle).get("mig_mode")
        if mode is None:
            raise self.NVMLError_NotSupported("Not Supported")
        return mode

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):  # noqa: N802
        return self._data(handle).get("max_mig_devices", 0)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, slot):  # noqa: N802
        parent = self._data(handle)
        if not any(m["slot"] == slot for m in parent["mig_devices"]):
            raise self.NVMLError_NotFound("Not Found")
        return ("mig", handle[1], slot)


if __name__ == "__main__":
    json.dump(record(), sys.stdout, indent=2)
    sys.stdout.write("\n")
