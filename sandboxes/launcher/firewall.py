"""The periodic check of the sandboxes' host firewall: re-ensure it and audit any drift.

The hub ensures the networks and rules when it starts (run-hub.sh), but rules can go later: a
`docker` restart, a host firewall reload (`iptables -F`, firewalld, ufw) or a hand edit removes
them silently, and an open-egress sandbox would then reach the private network. The worker runs
`network.ensure` every few minutes (Celery beat) and records an audit event naming what it had
to put back. It needs root, like the hub; a worker that cannot manage iptables says so once and
leaves the firewall to whoever can.
"""

from __future__ import annotations

import logging
import os
import shutil

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from sandboxes.spawner import network

logger = logging.getLogger(__name__)

_warned_unmanageable = False


def _iptables_manageable() -> bool:
    return os.geteuid() == 0 and shutil.which("iptables") is not None


def firewall_ensure() -> list[str]:
    """Re-ensure the sandbox networks and firewall; audit what drifted. Returns what changed.

    Not root (or no iptables): a warning the first time, then nothing. A firewall that cannot
    be made right (FORWARD not reaching DOCKER-USER, a bad $SANDBOX_EGRESS_ALLOW) raises
    NetworkError, so the failure shows in the worker's log every run until someone fixes it."""
    global _warned_unmanageable
    if not _iptables_manageable():
        if not _warned_unmanageable:
            _warned_unmanageable = True
            logger.warning(
                "the sandbox firewall check is skipped: this worker cannot manage iptables "
                "(it needs root and iptables); the hub's start (run-hub.sh) still ensures it"
            )
        return []
    changed = network.ensure()
    if changed:
        logger.warning("sandbox firewall drifted and was repaired: %s", changed)
        audit_record(
            actor=None, action=AuditAction.SANDBOX_FIREWALL_REPAIRED, data={"changed": changed}
        )
    return changed
