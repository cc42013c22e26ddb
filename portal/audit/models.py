"""The audit log: what security-relevant thing happened, who did it, to what, from where."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from portal.core.models import AppendOnlyModel

from .actions import AuditAction


class AuditEvent(AppendOnlyModel):
    """One security event. Rows are only ever inserted.

    The database refuses UPDATE (and, on PostgreSQL, DELETE) with a trigger, so not even a
    hand-written query can rewrite history; `save()` and `delete()` refuse it in code first.
    `actor_email` and `target_repr` are snapshots: they still read true after the user or the
    target changes.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("actor"),
    )
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(_("action"), max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            models.Index(fields=["actor", "-created_at"], name="audit_actor_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.actor_email}"

    @property
    def action_label(self) -> str:
        """What the action is called on the audit page; an action that is no longer declared
        (the log keeps every row it ever had) reads as its stored value."""
        return AuditAction.label_of(self.action)
