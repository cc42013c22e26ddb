"""Startups: the organisation, its members and their roles, and invitations to join."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel, TimeStampedModel


class Sector(models.TextChoices):
    AGRICULTURE = "agriculture", _("Agriculture")
    CLIMATE = "climate", _("Climate and energy")
    EDUCATION = "education", _("Education")
    FINANCE = "finance", _("Finance and fintech")
    GOVERNMENT = "government", _("Government services")
    HEALTH = "health", _("Health")
    LANGUAGE = "language", _("Language and speech")
    LOGISTICS = "logistics", _("Logistics and transport")
    MANUFACTURING = "manufacturing", _("Manufacturing")
    MEDIA = "media", _("Media and entertainment")
    RETAIL = "retail", _("Retail and e-commerce")
    SECURITY = "security", _("Security")
    SOFTWARE = "software", _("Software and developer tools")
    TELECOM = "telecom", _("Telecommunications")
    OTHER = "other", _("Other")


class Province(models.TextChoices):
    PUNJAB = "punjab", _("Punjab")
    SINDH = "sindh", _("Sindh")
    KHYBER_PAKHTUNKHWA = "kp", _("Khyber Pakhtunkhwa")
    BALOCHISTAN = "balochistan", _("Balochistan")
    ISLAMABAD = "ict", _("Islamabad Capital Territory")
    GILGIT_BALTISTAN = "gb", _("Gilgit-Baltistan")
    AZAD_KASHMIR = "ajk", _("Azad Jammu and Kashmir")


class TeamSize(models.TextChoices):
    SOLO = "1", _("Just me")
    SMALL = "2-5", _("2 to 5")
    MEDIUM = "6-20", _("6 to 20")
    LARGE = "21-50", _("21 to 50")
    XLARGE = "51+", _("More than 50")


class DataSensitivity(models.TextChoices):
    PUBLIC = "public", _("Public data only")
    INTERNAL = "internal", _("Internal business data")
    PERSONAL = "personal", _("Personal data about people")
    GOVERNMENT = "government", _("Government data")


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    ADMIN = "admin", _("Admin")
    MEMBER = "member", _("Member")


class OrganisationQuerySet(models.QuerySet):
    def for_user(self, user) -> "OrganisationQuerySet":
        """The organisations a person may see: those they belong to."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user).distinct()


class Organisation(PublicIdModel):
    """A registered company that uses the national GPUs. Exactly one member is its owner."""

    legal_name = models.CharField(_("legal name"), max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    secp_registration_number = models.CharField(
        _("SECP registration number (CUIN)"), max_length=7, unique=True
    )
    ntn = models.CharField(_("NTN"), max_length=9, unique=True, null=True, blank=True)
    sector = models.CharField(_("sector"), max_length=32, choices=Sector.choices)
    city = models.CharField(_("city"), max_length=100)
    province = models.CharField(_("province or territory"), max_length=16, choices=Province.choices)
    website = models.URLField(_("website"), blank=True)
    team_size = models.CharField(_("team size"), max_length=8, choices=TeamSize.choices)
    data_sensitivity = models.CharField(
        _("most sensitive data you will process"),
        max_length=16,
        choices=DataSensitivity.choices,
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )

    objects = OrganisationQuerySet.as_manager()

    class Meta:
        ordering = ["legal_name"]

    def __str__(self) -> str:
        return self.legal_name


# The roles that manage an organisation: its members, its keys, its credit applications.
MANAGER_ROLES = (Role.OWNER, Role.ADMIN)


class MembershipQuerySet(models.QuerySet):
    def managers(self) -> "MembershipQuerySet":
        """The memberships of those who manage their organisation: its owner and its admins
        (narrow it by organisation, person, or both)."""
        return self.filter(role__in=MANAGER_ROLES)


class Membership(TimeStampedModel):
    """A person's place in an organisation. The database allows one owner per organisation."""

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(_("role"), max_length=8, choices=Role.choices, default=Role.MEMBER)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        ordering = ["organisation", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "user"], name="organisations_membership_unique"
            ),
            models.UniqueConstraint(
                fields=["organisation"],
                condition=models.Q(role="owner"),
                name="organisations_one_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}) in {self.organisation}"

    @property
    def can_manage_members(self) -> bool:
        return self.role in MANAGER_ROLES


class InvitationQuerySet(models.QuerySet):
    def pending(self) -> "InvitationQuerySet":
        return self.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )


class Invitation(PublicIdModel):
    """An e-mailed offer to join an organisation: single use, expires, can be revoked.

    The link carries a token signed with the portal's secret over the invitation's public id; the
    row records whether it has been used, so a copied link cannot be used twice.
    """

    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField(_("e-mail address"))
    role = models.CharField(_("role"), max_length=8, choices=Role.choices, default=Role.MEMBER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One open invitation per address and organisation; re-inviting replaces it.
            models.UniqueConstraint(
                "organisation",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="organisations_one_open_invitation",
            ),
            models.CheckConstraint(
                condition=~models.Q(role="owner"), name="organisations_invitation_not_owner"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.organisation}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()
