"""The launcher's live messages, `sandbox.status` and `spawn.progress` (their contract:
sandboxes/live/MESSAGES.md): built here, from the sandbox as it is now, and handed to the live
transport, which sends them after the commit to the sandbox's owner and paying organisation."""

from __future__ import annotations

from sandboxes.live import broadcast

from .models import Sandbox
from .selectors import queue_position


def sandbox_message(sandbox: Sandbox, message_type: str) -> dict:
    """A sandbox's state as `sandbox.status` and `spawn.progress` carry it, with its place in the
    queue (None when it is not queued), in the current language."""
    return {
        "type": message_type,
        "sandbox": str(sandbox.public_id),
        "status": sandbox.status,
        "status_label": str(sandbox.get_status_display()),
        "message": sandbox.status_text,
        "progress": sandbox.progress,
        "queue_position": queue_position(sandbox),
    }


def _send(sandbox: Sandbox, message_type: str) -> int:
    # Built once for readers of every language (the owner's, the organisation's members'): the
    # consumer gives each socket the words in its own.
    message = {
        **sandbox_message(sandbox, message_type),
        broadcast.IN_EACH_LANGUAGE: {
            "status_label": broadcast.in_each_language(sandbox.get_status_display),
            "message": broadcast.in_each_language(lambda: sandbox.status_text),
        },
    }
    return broadcast.send_after_commit(
        (group, message) for group in broadcast.sandbox_groups(sandbox)
    )


def sandbox_status_send(sandbox: Sandbox) -> int:
    """`sandbox.status`: the sandbox changed state. Returns how many messages were queued."""
    return _send(sandbox, "sandbox.status")


def spawn_progress_send(sandbox: Sandbox) -> int:
    """`spawn.progress`: a starting sandbox moved on (progress, message)."""
    return _send(sandbox, "spawn.progress")
