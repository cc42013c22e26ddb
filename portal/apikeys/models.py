"""API keys: hashed, scoped, expiring, revocable; owned by a person or an organisation."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel


class ApiKeyQuerySet(models.QuerySet):
    def for_user(self, user) -> "ApiKeyQuerySet":
        """Keys a person may see and revoke: their own, and their organisations' when they are
        an owner or admin there."""
        from portal.organisations.models import Role

        if not user.is_authenticated:
            return self.none()
        return self.filter(
            Q(user=user)
            | Q(
                organisation__memberships__user=user,
                organisation__memberships__role__in=[Role.OWNER, Role.ADMIN],
            )
        ).distinct()


class ApiKey(PublicIdModel):
    """A key for the REST API. The secret itself is never stored, only its HMAC."""

    key_id = models.CharField(max_length=16, unique=True, editable=False)
    name = models.CharField(_("name"), max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
    )
    organisation = models.ForeignKey(
        "organisations.Organisation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    scopes = models.JSONField(default=list)
    secret_hash = models.CharField(max_length=64, editable=False)
    expires_at = models.DateTimeField(_("expires at"))
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                name="apikeys_one_owner",
                condition=Q(user__isnull=False, organisation__isnull=True)
                | Q(user__isnull=True, organisation__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (nac_{self.key_id}_…)"

    @property
    def display_prefix(self) -> str:
        return f"nac_{self.key_id}_…"

    @property
    def state(self) -> str:
        """revoked, expired, suspended (its owner is deactivated or suspended) or active."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        owner_active = self.user.is_active if self.user_id else self.organisation.is_active
        return "active" if owner_active else "suspended"

    @property
    def is_active(self) -> bool:
        """Usable now: not revoked, not expired, and its owner is active (the same rules as
        services.apikey_authenticate)."""
        return self.state == "active"


class IdempotencyRecord(models.Model):
    """The first response to a POST that carried an Idempotency-Key, for replay.

    `owner` is who sent it (an API key or a signed-in person): one client's keys never collide
    with another's. A row in state "in_flight" means the first request is still running.
    """

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        DONE = "done"

    owner = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    body_sha256 = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_FLIGHT)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="apikeys_idempotency_once")
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key}"
