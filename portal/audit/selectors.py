"""Reads of the audit log for programme managers."""

import datetime as dt

from django.db.models import QuerySet

from .models import AuditEvent


def audit_events_list(
    *,
    actor: str = "",
    action: str = "",
    target: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[AuditEvent]:
    """Events newest first, narrowed by any of the filters (dates inclusive, local time)."""
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor_email__icontains=actor)
    if action:
        events = events.filter(action=action)
    if target:
        events = events.filter(target_repr__icontains=target) | events.filter(target_id=target)
    if date_from:
        events = events.filter(created_at__date__gte=date_from)
    if date_to:
        events = events.filter(created_at__date__lte=date_to)
    return events


def audit_actions() -> list[str]:
    """Every action that has been recorded, for the filter's choices."""
    return list(AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct())
