"""Pushes sandbox events to browsers over Channels. Messages are small versioned JSON, documented
in docs/live-messages.md; they are sent after the surrounding transaction commits, so nobody sees
a state the database then rolls back."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)
VERSION = 1


def user_group(user_id: int) -> str:
    return f"sandboxes.user.{user_id}"


def _payload(sandbox) -> dict:
    from .services import queue_position

    return {
        "v": VERSION,
        "sandbox": str(sandbox.public_id),
        "status": sandbox.status,
        "status_label": str(sandbox.get_status_display()),
        "message": sandbox.status_message,
        "progress": sandbox.progress,
        "queue_position": queue_position(sandbox),
    }


def _send(group: str, message_type: str, data: dict) -> None:
    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(
                group, {"type": "portal.message", "message": {"type": message_type, **data}}
            )
        except Exception:  # a lost live update must never fail a launch or a stop
            logger.exception("could not broadcast %s to %s", message_type, group)

    transaction.on_commit(send)


def sandbox_status(sandbox) -> None:
    _send(user_group(sandbox.user_id), "sandbox.status", _payload(sandbox))


def spawn_progress(sandbox) -> None:
    _send(user_group(sandbox.user_id), "spawn.progress", _payload(sandbox))
