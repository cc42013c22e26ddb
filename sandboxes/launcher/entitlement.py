"""What the hub may start: the spawn spec the spawner asks for before every start (through the
internal API, internal.py), exactly what the portal authorised and nothing else."""

from __future__ import annotations

from django.utils.translation import gettext as _

from sandboxes.gpus.models import GpuDevice
from sandboxes.gpus.selectors import uuids_held_by

from .models import Sandbox
from .selectors import current_start_id, home_volume

Status = Sandbox.Status


class SpawnRefused(Exception):
    """The hub asked to start something the portal did not authorise."""


def spawn_spec(*, hub_username: str, server_name: str) -> dict:
    """What the hub may start for this server, exactly; refused unless the portal itself asked
    for this start (the sandbox is `starting`)."""
    sandbox = (
        Sandbox.objects.select_related("user", "image", "profile")
        .filter(server_name=server_name, user__hub_username=hub_username)
        .first()
    )
    if sandbox is None:
        raise SpawnRefused(
            _("This server was not launched from the portal. Launch sandboxes from the portal.")
        )
    if sandbox.status != Status.STARTING:
        raise SpawnRefused(
            _("The portal has not authorised a start of this sandbox (it is %(status)s).")
            % {"status": sandbox.get_status_display().lower()}
        )
    if not sandbox.user.is_active:
        raise SpawnRefused(_("This account is disabled."))
    profile = sandbox.profile
    uuids = uuids_held_by(sandbox=sandbox)
    if len(uuids) != profile.gpu_count:
        raise SpawnRefused(_("The GPUs for this sandbox are not allocated."))
    mib = 1024 * 1024
    # Simulated GPUs are bookkeeping only: the container gets no device (there is none), and
    # learns which pretend GPUs it holds from the environment.
    simulated = GpuDevice.objects.filter(uuid__in=uuids, simulated=True).exists()
    environment = {"NAC_SANDBOX_ID": str(sandbox.public_id), "NAC_PROFILE": profile.slug}
    if simulated:
        environment["NAC_SIMULATED_GPUS"] = ",".join(uuids)
    start = current_start_id(sandbox=sandbox)
    return {
        "version": 1,
        "sandbox": str(sandbox.public_id),
        # Which start this is: the spawner sends it back with server-stopped.
        "start": str(start) if start else "",
        "image": sandbox.image.image,
        "cpu_limit": float(profile.cpu_cores),
        "mem_limit_bytes": profile.memory_mib * mib,
        "shm_size_bytes": profile.shm_mib * mib,
        "pids_limit": profile.pids_limit,
        "disk_bytes": profile.disk_mib * mib,  # 0: no limit
        "gpu_uuids": [] if simulated else uuids,
        "volume": home_volume(sandbox.user),
        "egress": profile.egress,
        "environment": environment,
        "labels": {
            "nac.sandbox": str(sandbox.public_id),
            "nac.user": sandbox.user.hub_username,
            "nac.profile": profile.slug,
        },
    }
