"""Telemetry readers: NVML (replayed from a recording: the driver is the one boundary CI cannot
have), the simulated GPUs, and Docker's stats for a real running container."""

import json
import time
import uuid
from pathlib import Path

import pytest

from sandboxes.gpus.backends import NvmlBackend
from sandboxes.gpus.nvml_recording import RecordedNvml
from sandboxes.metering import telemetry
from tests.sandboxes.spawner.conftest import docker_client, sandbox_image  # noqa: F401

FIXTURE = Path(__file__).parents[1] / "gpus" / "fixtures" / "composed-h100x2-mig.json"
WHOLE = "GPU-5f3b1c2e-8a7d-4e21-9c0b-1d2e3f405162"
MIG = "MIG-11111111-2222-4333-8444-555555555555"


def recorded() -> NvmlBackend:
    return NvmlBackend(nvml=RecordedNvml(json.loads(FIXTURE.read_text())))


def test_nvml_reads_each_device_by_uuid():
    backend = recorded()
    readings = telemetry.nvml_read(backend, [WHOLE, MIG, "GPU-not-on-this-host"])
    assert readings[WHOLE] == telemetry.GpuReading(
        util_pct=0.0, memory_used_mib=540, power_w=71.2, temperature_c=31
    )
    # A MIG instance: no utilisation of its own; power and temperature are its GPU's.
    assert readings[MIG] == telemetry.GpuReading(
        util_pct=None, memory_used_mib=0, power_w=69.0, temperature_c=30
    )
    assert "GPU-not-on-this-host" not in readings
    assert backend.nvml.initialised == 0  # shut down again


def test_without_a_driver_there_are_no_readings_and_no_error():
    assert telemetry.nvml_read(NvmlBackend(nvml=RecordedNvml(None)), [WHOLE]) == {}


def test_simulated_gpus_follow_the_holders_cpu_load():
    devices = {
        "GPU-idle": (81559, 0.0),
        "GPU-half": (81559, 0.5),
        "GPU-busy": (81559, 1.0),
        "GPU-free": (81559, None),
    }
    readings = telemetry.simulated_read(devices, tick=7)
    idle, busy, free = readings["GPU-idle"], readings["GPU-busy"], readings["GPU-free"]
    assert idle.util_pct == 0.0
    assert busy.util_pct > 90
    assert busy.power_w > 600 > 100 > idle.power_w
    assert busy.memory_used_mib > idle.memory_used_mib > free.memory_used_mib == 0
    assert busy.temperature_c > idle.temperature_c
    assert telemetry.simulated_read(devices, tick=7) == readings  # repeatable
    half = readings["GPU-half"]
    assert telemetry.simulated_read(devices, tick=8)["GPU-half"] != half  # but alive
    assert busy.util_pct > half.util_pct > idle.util_pct


@pytest.fixture
def burning_container(docker_client, sandbox_image):  # noqa: F811
    """A real container labelled as a sandbox, one core busy."""
    public_id = str(uuid.uuid4())
    container = docker_client.containers.run(
        sandbox_image,
        ["python3", "-c", "while True: pass"],
        labels={"nac.sandbox": public_id},
        detach=True,
        remove=True,
        nano_cpus=1_000_000_000,
        mem_limit="512m",
    )
    try:
        yield public_id
    finally:
        container.kill()


def test_docker_stats_give_cpu_from_the_change_since_the_last_tick_and_memory(
    burning_container,
):
    first = telemetry.containers_read({burning_container, str(uuid.uuid4())})
    assert set(first) == {burning_container}
    assert first[burning_container].cpu_pct is None  # nothing to compare with yet
    assert first[burning_container].memory_limit_mib == 512
    assert 0 < first[burning_container].memory_used_mib < 512
    time.sleep(2)
    second = telemetry.containers_read({burning_container})[burning_container]
    assert 60 < second.cpu_pct <= 110  # one core, busy
