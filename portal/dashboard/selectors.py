"""Figures for the programme overview. Each is one aggregate query."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Exists, Min, OuterRef, QuerySet
from django.utils import timezone

from portal.credits.models import CreditApplication
from portal.credits.selectors import QUEUE_STATES
from portal.onboarding.models import Cohort, StudentProfile
from portal.organisations.models import Membership, Organisation


@dataclass(frozen=True)
class ProgrammeOverview:
    organisations: int
    organisations_suspended: int
    students: int
    pending_onboarding: int
    cohorts: int
    applications_waiting: int
    oldest_waiting_days: int | None


def users_pending_onboarding() -> QuerySet:
    """People who signed up but are neither in an organisation nor a student nor staff."""
    User = get_user_model()
    return (
        User.objects.filter(is_active=True, is_staff=False)
        .exclude(Exists(Membership.objects.filter(user=OuterRef("pk"))))
        .exclude(Exists(StudentProfile.objects.filter(user=OuterRef("pk"))))
    )


def programme_overview() -> ProgrammeOverview:
    waiting = CreditApplication.objects.filter(state__in=QUEUE_STATES)
    oldest = waiting.aggregate(oldest=Min("submitted_at"))["oldest"]
    return ProgrammeOverview(
        applications_waiting=waiting.count(),
        oldest_waiting_days=(timezone.now() - oldest).days if oldest else None,
        organisations=Organisation.objects.filter(is_active=True).count(),
        organisations_suspended=Organisation.objects.filter(is_active=False).count(),
        students=StudentProfile.objects.count(),
        pending_onboarding=users_pending_onboarding().count(),
        cohorts=Cohort.objects.count(),
    )


def recent_organisations(limit: int = 10) -> QuerySet[Organisation]:
    return Organisation.objects.order_by("-created_at")[:limit]


def recent_students(limit: int = 10) -> QuerySet[StudentProfile]:
    return StudentProfile.objects.select_related("user", "university", "cohort").order_by(
        "-created_at"
    )[:limit]
