"""Reads about API keys."""

from django.utils import timezone

from .models import ApiKey


def api_key_ids_in_force(*, organisation=None, user=None) -> list[str]:
    """The key ids of an organisation's service keys, or of a person's own keys, that are
    neither revoked nor expired, whatever their owner's state: what a suspension silences and
    a reactivation restores (for the audit)."""
    holder = {"organisation": organisation} if organisation is not None else {"user": user}
    return list(
        ApiKey.objects.filter(**holder, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .order_by("key_id")
        .values_list("key_id", flat=True)
    )
