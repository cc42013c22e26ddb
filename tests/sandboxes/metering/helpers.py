"""Running sandboxes for the metering tests, started the way the hub would report them."""

import datetime as dt

from django.utils import timezone

from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.models import SandboxRun
from tests.sandboxes.launcher.helpers import committed, image, profile


def running(user, slug: str = "gpu-1", *, ago: float = 0) -> tuple[Sandbox, SandboxRun]:
    """Launch and mark running; `ago` seconds back-dates the run (as if its resources had been
    allocated that long ago)."""
    sandbox = committed(launcher.sandbox_launch, user=user, image=image(), profile=profile(slug))
    committed(launcher.sandbox_mark_running, sandbox_id=sandbox.pk)
    run = SandboxRun.objects.get(sandbox=sandbox, ended_at__isnull=True)
    if ago:
        start = timezone.now() - dt.timedelta(seconds=ago)
        SandboxRun.objects.filter(pk=run.pk).update(started_at=start, charged_until=start)
        run.refresh_from_db()
    sandbox.refresh_from_db()
    return sandbox, run
