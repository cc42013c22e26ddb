"""The review queue: how long each application has waited."""

import datetime as dt

from django.conf import settings
from django.utils import timezone

from portal.credits.selectors import QUEUE_STATES


def queue_waiting_days(*, applications, now: dt.datetime | None = None) -> list:
    """Mark each application of a page with `days_waiting` (whole days since submission, for
    those waiting for a decision; None for the others) and `overdue` (waiting longer than the
    service level). No query."""
    now = now or timezone.now()
    sla = dt.timedelta(days=settings.CREDITS_REVIEW_SLA_DAYS)
    marked = []
    for application in applications:
        waiting = application.submitted_at and application.state in QUEUE_STATES
        application.days_waiting = (now - application.submitted_at).days if waiting else None
        application.overdue = bool(waiting and now - application.submitted_at > sla)
        marked.append(application)
    return marked
