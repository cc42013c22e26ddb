"""Set-ups for the programme pages' tests: a fixed clock, sandboxes, GPUs, roll-ups, the books."""

import datetime as dt
import secrets
import uuid
import zoneinfo

import time_machine

from portal.credits.services import usage_charge
from sandboxes.gpus.backends import SimulatedBackend
from sandboxes.gpus.models import GpuDevice
from sandboxes.gpus.services import inventory_sync
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.models import DeviceRollup
from tests.sandboxes.launcher.helpers import image, profile

HOUR = 3600
KARACHI = zoneinfo.ZoneInfo("Asia/Karachi")
# Mid-month, mid-day in Pakistan: "this month" and "today" are unambiguous.
NOW = dt.datetime(2026, 11, 18, 14, 20, tzinfo=KARACHI)


def at(moment: dt.datetime = NOW):
    return time_machine.travel(moment, tick=False)


def hour_of(moment: dt.datetime) -> dt.datetime:
    """The UTC hour bucket a moment falls in, as the roll-ups key them."""
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def gpus(count: int) -> list[GpuDevice]:
    inventory_sync(backend=SimulatedBackend(f"{count}xH100-80GB", host="test-host"))
    return list(GpuDevice.objects.order_by("index"))


def sandbox(user, account, *, organisation=None, status=Sandbox.Status.RUNNING, **fields):
    """A sandbox row in the given state (the launcher's own tests drive its transitions)."""
    return Sandbox.objects.create(
        user=user,
        account=account,
        organisation=organisation,
        image=image(),
        profile=profile("gpu-1"),
        server_name="sb-"
        + "".join(secrets.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(10)),
        status=status,
        **fields,
    )


def rollup(device, bucket, *, samples=360, util=None, held=0, idle=0) -> DeviceRollup:
    return DeviceRollup.objects.create(
        device=device,
        bucket=bucket,
        samples=samples,
        util_pct=util,
        held_samples=held,
        idle_held_samples=idle,
    )


def charge(account, seconds: int):
    return usage_charge(
        account=account,
        credit_seconds=seconds,
        idempotency_key=f"test-usage:{uuid.uuid4()}",
        metadata={"sandbox": "test", "profile": "gpu-1"},
    )
