"""API keys: hashed, scoped, expiring, revocable; owned by a person or an organisation."""

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel
from portal.organisations.models import Membership


def answerable_is_manager() -> Exists:
    """For a query over ApiKey: the key's answerable person is an active owner or admin of the
    key's organisation (false for a key with none)."""
    return Exists(
        Membership.objects.managers().filter(
            organisation_id=OuterRef("organisation_id"),
            user_id=OuterRef("answerable_by_id"),
            user__is_active=True,
        )
    )


class ApiKeyQuerySet(models.QuerySet):
    def for_user(self, user) -> "ApiKeyQuerySet":
        """Keys a person may see and revoke: their own, and their organisations' when they are
        an owner or admin there."""
        if not user.is_authenticated:
            return self.none()
        return (
            self.filter(
                Q(user=user)
                | Q(
                    organisation__in=Membership.objects.managers()
                    .filter(user=user)
                    .values("organisation")
                )
            )
            .annotate(answerable_in_place=answerable_is_manager())
            .distinct()
        )


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
    # An organisation's key acts for its organisation, but a person answers for it: its maker,
    # or the owner who re-confirmed it after the maker left. It works only while that person is
    # an owner or admin there (services.apikey_authenticate); None (a key made before this was
    # recorded, or whose person was deleted) works not at all until an owner re-confirms it.
    answerable_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Organisation keys: the owner or admin who answers for the key."),
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
        """revoked, expired, suspended (its owner is deactivated or suspended), unconfirmed (an
        organisation's key whose answerable person is no longer an owner or admin there: an
        owner must re-confirm it) or active."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        owner_active = self.user.is_active if self.user_id else self.organisation.is_active
        if not owner_active:
            return "suspended"
        if self.organisation_id and not self.answerable_in_place:
            return "unconfirmed"
        return "active"

    @cached_property
    def answerable_in_place(self) -> bool:
        """An organisation's key: the person who answers for it is still an active owner or
        admin of the organisation. (Always true for a person's own key.) Querysets that list
        keys annotate it, so a page of keys asks once."""
        if not self.organisation_id:
            return True
        return ApiKey.objects.filter(pk=self.pk).filter(answerable_is_manager()).exists()

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
