"""Onboarding: turning a verified person into a startup founder or a student."""

import datetime as dt

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError
from portal.credits.tasks import student_allowance_grant as student_allowance_grant_task
from portal.organisations.models import Organisation
from portal.organisations.services import organisation_create
from portal.users.models import User
from portal.users.selectors import user_has_verified_email

from .models import Cohort, StudentProfile, University
from .selectors import OnboardingState, onboarding_state, university_for_email

GRADUATION_YEARS_AHEAD = 8


def _require_can_onboard(user: User) -> None:
    if not user_has_verified_email(user=user):
        raise ApplicationError(
            _("Verify your e-mail address first: open the link we sent you."),
            code="email_unverified",
        )
    if onboarding_state(user=user) is not OnboardingState.NOT_STARTED:
        raise ApplicationError(_("You have already completed onboarding."), code="onboarded")


def graduation_year_range() -> range:
    year = timezone.localdate().year
    return range(year - 1, year + GRADUATION_YEARS_AHEAD + 1)


@transaction.atomic
def startup_onboard(*, user: User, ip: str | None = None, **details) -> Organisation:
    """Register the founder's company; the founder becomes its owner."""
    _require_can_onboard(user)
    return organisation_create(owner=user, ip=ip, **details)


@transaction.atomic
def student_onboard(
    *,
    user: User,
    programme: str,
    expected_graduation_year: int,
    cohort_code: str = "",
    university: University | None = None,
    institution: str = "",
    ip: str | None = None,
) -> StudentProfile:
    """Admit a student by a cohort code when one is given, else by their e-mail's domain."""
    _require_can_onboard(user)
    if expected_graduation_year not in graduation_year_range():
        years = graduation_year_range()
        raise ApplicationError(
            _("Enter a graduation year between %(first)s and %(last)s.")
            % {"first": years[0], "last": years[-1]},
            field="expected_graduation_year",
        )
    cohort = None
    code = cohort_code.strip().upper()
    if code:
        cohort = _cohort_reserve_seat(code=code)
        route = StudentProfile.Route.COHORT
        university = cohort.university or university
    else:
        university = university_for_email(email=user.email)
        if university is None:
            domain = user.email.rsplit("@", 1)[-1]
            raise ApplicationError(
                _(
                    "%(domain)s is not the e-mail domain of a participating university. Sign up "
                    "with your university address, or enter a cohort invite code from your "
                    "instructor."
                )
                % {"domain": domain},
                field="cohort_code",
                code="domain_not_allowed",
            )
        route = StudentProfile.Route.EMAIL_DOMAIN
        institution = ""
    profile = StudentProfile.objects.create(
        user=user,
        route=route,
        university=university,
        institution="" if university else institution.strip(),
        cohort=cohort,
        programme=programme.strip(),
        expected_graduation_year=expected_graduation_year,
    )
    # The first month's allowance straight away, not at the next daily run.
    transaction.on_commit(lambda: student_allowance_grant_task.delay(user_id=user.pk))
    audit_record(
        actor=user,
        action="student.onboarded",
        target=user,
        ip=ip,
        data={
            "route": route,
            "university": university.name if university else None,
            "cohort": cohort.code if cohort else None,
        },
    )
    return profile


def _cohort_reserve_seat(*, code: str) -> Cohort:
    """Lock the cohort row so that two students taking the last seat at once cannot both win."""
    cohort = Cohort.objects.select_for_update().filter(code=code).first()
    if cohort is None:
        raise ApplicationError(_("This cohort code is not valid."), field="cohort_code")
    if cohort.is_expired:
        raise ApplicationError(_("This cohort code has expired."), field="cohort_code")
    if cohort.students.count() >= cohort.capacity:
        raise ApplicationError(
            _("This cohort is full. Ask your instructor for another code."), field="cohort_code"
        )
    return cohort


@transaction.atomic
def cohort_create(
    *,
    name: str,
    capacity: int,
    expires_at: dt.datetime,
    university: University | None,
    acting_user: User,
    monthly_allowance_gpu_hours: int | None = None,
    ip: str | None = None,
) -> Cohort:
    """A programme manager opens a cohort; its random code is what students type."""
    if expires_at <= timezone.now():
        raise ApplicationError(_("The expiry must be in the future."), field="expires_at")
    cohort = Cohort.objects.create(
        name=name.strip(),
        capacity=capacity,
        expires_at=expires_at,
        university=university,
        created_by=acting_user,
        monthly_allowance_gpu_hours=monthly_allowance_gpu_hours,
    )
    audit_record(
        actor=acting_user,
        action="cohort.created",
        target=cohort,
        ip=ip,
        data={
            "capacity": capacity,
            "expires_at": expires_at.isoformat(),
            "monthly_allowance_gpu_hours": monthly_allowance_gpu_hours,
        },
    )
    return cohort
