"""The one writer of the audit log."""

from typing import Any

from django.db import models

from .actions import AuditAction
from .models import AuditEvent


def _target_fields(target: models.Model | None) -> dict[str, str]:
    if target is None:
        return {"target_type": "", "target_id": "", "target_repr": ""}
    key = getattr(target, "public_id", None) or target.pk
    return {
        "target_type": target._meta.label_lower,
        "target_id": str(key),
        "target_repr": str(target)[:200],
    }


def audit_record(
    *,
    actor,
    action: AuditAction,
    target: models.Model | None = None,
    ip: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. Call it inside the transaction of the change it records.

    `action` is an `AuditAction`; anything that is not one of its values is refused
    (ValueError), so every action in the log is declared, with its label, in one place."""
    action = AuditAction(action)
    actor = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=actor,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        ip=ip or None,
        data=data or {},
        **_target_fields(target),
    )


def client_ip(request) -> str | None:
    """The address the request came from, as the ASGI server saw it (proxy-aware there)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None
