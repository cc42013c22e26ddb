"""Onboarding: turning a verified person into a startup founder or a student."""

import datetime as dt

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError
from portal.organisations.models import Organisation
from portal.organisations.services import organisation_create
from portal.users.models import User
from portal.users.selectors import user_has_verified_email

from .models import Cohort, StudentProfile, University
from .selectors import OnboardingState, onboarding_state, university_for_email
from .tasks import student_allowance_grant_task

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
        action=AuditAction.STUDENT_ONBOARDED,
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
        action=AuditAction.COHORT_CREATED,
        target=cohort,
        ip=ip,
        data={
            "capacity": capacity,
            "expires_at": expires_at.isoformat(),
            "monthly_allowance_gpu_hours": monthly_allowance_gpu_hours,
        },
    )
    return cohort


def _cohort_locked(cohort: Cohort) -> Cohort:
    """The cohort's row, locked: the same lock a student taking a seat holds, so a change of
    capacity and the last seat being taken are decided one after the other."""
    return Cohort.objects.select_for_update().get(pk=cohort.pk)


@transaction.atomic
def cohort_update(
    *,
    cohort: Cohort,
    name: str,
    capacity: int,
    expires_at: dt.datetime,
    monthly_allowance_gpu_hours: int | None,
    acting_user: User,
    ip: str | None = None,
) -> Cohort:
    """A programme manager changes a cohort's name, capacity, code expiry or allowance override.

    The capacity cannot drop below the students who already joined (they keep their seats); an
    expiry in the past is refused here (closing a code now is `cohort_deactivate`). A new
    allowance override applies from the next monthly allowance: a month already granted is not
    granted again. Only what changed is audited, as before → after.
    """
    if not name.strip():
        raise ApplicationError(_("Give the cohort a name."), field="name")
    if capacity < 1:
        raise ApplicationError(_("The capacity must be at least 1."), field="capacity")
    cohort = _cohort_locked(cohort)
    joined = cohort.students.count()
    if capacity < joined:
        raise ApplicationError(
            _("%(n)s students have already joined: the capacity cannot be lower.") % {"n": joined},
            field="capacity",
        )
    if expires_at <= timezone.now():
        raise ApplicationError(
            _("The expiry must be in the future. To close the code now, deactivate the cohort."),
            field="expires_at",
        )
    wanted = {
        "name": name.strip(),
        "capacity": capacity,
        "expires_at": expires_at,
        "monthly_allowance_gpu_hours": monthly_allowance_gpu_hours,
    }
    changes = {
        field: (getattr(cohort, field), value)
        for field, value in wanted.items()
        if getattr(cohort, field) != value
    }
    if not changes:
        return cohort
    for field, (_before, after) in changes.items():
        setattr(cohort, field, after)
    cohort.save(update_fields=[*changes, "updated_at"])
    audit_record(
        actor=acting_user,
        action=AuditAction.COHORT_UPDATED,
        target=cohort,
        ip=ip,
        data={
            field: {"from": _audit_value(before), "to": _audit_value(after)}
            for field, (before, after) in changes.items()
        },
    )
    return cohort


@transaction.atomic
def cohort_deactivate(*, cohort: Cohort, acting_user: User, ip: str | None = None) -> Cohort:
    """Close a cohort's invite code now: its expiry moves to this instant, so no one else can
    join with it. Students who joined keep their profile and their allowance. A cohort can be
    opened again by giving it a future expiry (`cohort_update`)."""
    cohort = _cohort_locked(cohort)
    if cohort.is_expired:
        raise ApplicationError(_("This cohort's code is already closed."), code="wrong_state")
    previous = cohort.expires_at
    cohort.expires_at = timezone.now()
    cohort.save(update_fields=["expires_at", "updated_at"])
    audit_record(
        actor=acting_user,
        action=AuditAction.COHORT_DEACTIVATED,
        target=cohort,
        ip=ip,
        data={"expires_at_was": previous.isoformat(), "joined": cohort.students.count()},
    )
    return cohort


def _audit_value(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value
