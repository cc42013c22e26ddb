"""Who may join as a student: universities (by e-mail domain), cohorts (by code), profiles."""

import secrets

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.core.models import PublicIdModel, TimeStampedModel

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def cohort_code_generate() -> str:
    """Eight random characters in two groups, e.g. K7RM-P2QX: easy to read out in a lecture."""
    chars = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


class University(TimeStampedModel):
    """A university whose students may sign up with their university e-mail address."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    short_name = models.CharField(_("short name"), max_length=32, blank=True)
    city = models.CharField(_("city"), max_length=100, blank=True)
    is_active = models.BooleanField(
        _("accepting students"),
        default=True,
        help_text=_("Untick to stop new sign-ups from this university's domains."),
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = _("universities")

    def __str__(self) -> str:
        return self.name


class UniversityDomain(models.Model):
    """An e-mail domain on the allow-list. Subdomains match too (seecs.nust.edu.pk)."""

    university = models.ForeignKey(University, on_delete=models.CASCADE, related_name="domains")
    domain = models.CharField(_("e-mail domain"), max_length=253, unique=True)

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(domain__regex=r"^[a-z0-9-]+(\.[a-z0-9-]+)+$"),
                name="onboarding_domain_lowercase_hostname",
            )
        ]

    def __str__(self) -> str:
        return self.domain


class Cohort(PublicIdModel):
    """A group of students let in by an invite code: a course, a bootcamp, a hackathon."""

    name = models.CharField(_("cohort name"), max_length=200)
    code = models.CharField(
        _("invite code"), max_length=9, unique=True, default=cohort_code_generate
    )
    university = models.ForeignKey(
        University,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cohorts",
        verbose_name=_("university"),
    )
    capacity = models.PositiveIntegerField(_("capacity"), validators=[MinValueValidator(1)])
    expires_at = models.DateTimeField(_("code expires at"))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    monthly_allowance_gpu_hours = models.PositiveIntegerField(
        _("monthly allowance (GPU-hours)"),
        null=True,
        blank=True,
        help_text=_("Leave empty for the programme's default allowance; 0 for none."),
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(capacity__gte=1), name="cohort_capacity_positive"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class StudentProfile(TimeStampedModel):
    """A person admitted as a student, and how they proved it."""

    class Route(models.TextChoices):
        EMAIL_DOMAIN = "email_domain", _("University e-mail")
        COHORT = "cohort", _("Cohort invite code")

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="student_profile"
    )
    route = models.CharField(max_length=16, choices=Route.choices)
    university = models.ForeignKey(
        University, null=True, blank=True, on_delete=models.PROTECT, related_name="students"
    )
    institution = models.CharField(
        _("institution"),
        max_length=200,
        blank=True,
        help_text=_("For cohort students whose university is not on the list."),
    )
    cohort = models.ForeignKey(
        Cohort, null=True, blank=True, on_delete=models.PROTECT, related_name="students"
    )
    programme = models.CharField(_("degree programme"), max_length=200)
    expected_graduation_year = models.PositiveSmallIntegerField(_("expected graduation year"))

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(route="cohort") | models.Q(cohort__isnull=False),
                name="student_cohort_route_has_cohort",
            ),
            models.CheckConstraint(
                condition=~models.Q(route="email_domain") | models.Q(university__isnull=False),
                name="student_domain_route_has_university",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.university or self.institution or self.cohort})"

    @property
    def institution_name(self) -> str:
        return self.university.name if self.university else self.institution
