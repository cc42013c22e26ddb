"""Reads for onboarding: where a person stands and which university an address belongs to."""

import enum

from portal.organisations.models import Organisation
from portal.users.models import User
from portal.users.selectors import user_is_programme_manager

from .models import StudentProfile, University, UniversityDomain


class OnboardingState(enum.Enum):
    PROGRAMME_MANAGER = "programme_manager"
    ORGANISATION = "organisation"
    STUDENT = "student"
    NOT_STARTED = "not_started"


def onboarding_state(*, user: User) -> OnboardingState:
    if user_is_programme_manager(user=user):
        return OnboardingState.PROGRAMME_MANAGER
    if user.memberships.exists():
        return OnboardingState.ORGANISATION
    if StudentProfile.objects.filter(user=user).exists():
        return OnboardingState.STUDENT
    return OnboardingState.NOT_STARTED


def first_organisation(*, user: User) -> Organisation | None:
    return Organisation.objects.for_user(user).order_by("memberships__created_at").first()


def university_for_email(*, email: str) -> University | None:
    """The active university whose domain, or a parent of it, the address ends with."""
    domain = email.rsplit("@", 1)[-1].strip().lower()
    labels = domain.split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    match = (
        UniversityDomain.objects.select_related("university")
        .filter(domain__in=candidates, university__is_active=True)
        .order_by("-domain")  # tie-break only; candidates are distinct suffixes
        .first()
    )
    return match.university if match else None
