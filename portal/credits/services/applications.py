"""The credit application workflow: one service per transition, each refusing illegal moves.

draft ──submit──▶ submitted ──review_start──▶ in_review ──approve──▶ approved / partially
  ▲                  │  ▲                        │        ──reject──▶ rejected
  │                  │  └──────resubmit──── changes_requested ◀──request_changes──┘
  └─ edits happen in draft and changes_requested; withdraw from any open state.
"""

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.core.mail import mail_send_after_commit
from portal.organisations.models import Membership, Organisation
from portal.users.selectors import user_is_programme_manager

from ..models import ApplicationEvent, ApplicationState, CreditApplication, CreditGrant
from ..units import gpu_hours_to_credit_seconds
from .grants import grant_issue
from .ledger import account_for_organisation, decision_conflict_refuse

S = ApplicationState
OPEN_STATES = {S.DRAFT, S.SUBMITTED, S.IN_REVIEW, S.CHANGES_REQUESTED}
EDITABLE_STATES = {S.DRAFT, S.CHANGES_REQUESTED}
DECIDABLE_STATES = {S.SUBMITTED, S.IN_REVIEW}
EDITABLE_FIELDS = [
    "title",
    "summary",
    "sector",
    "requested_gpu_hours",
    "gpu_class",
    "duration_months",
    "data_sensitivity",
]


class WrongState(ApplicationError):
    """The application is not in a state that allows this (HTTP 409 in the API)."""

    def __init__(self, message: str):
        super().__init__(message, code="wrong_state")


def _require_applicant(application: CreditApplication, user) -> None:
    if (
        not Membership.objects.managers()
        .filter(organisation_id=application.organisation_id, user=user)
        .exists()
    ):
        raise PermissionDenied(_("Only the organisation's owner or an admin can do this."))


def _require_reviewer(application: CreditApplication, user) -> None:
    if not user_is_programme_manager(user=user):
        raise PermissionDenied(_("Only programme managers review applications."))
    decision_conflict_refuse(organisation_id=application.organisation_id, acting_user=user)


def _locked(application: CreditApplication) -> CreditApplication:
    return CreditApplication.objects.select_for_update().get(pk=application.pk)


def _move(
    application: CreditApplication,
    *,
    to: str,
    allowed_from: set,
    by,
    message: str = "",
    **fields,
) -> CreditApplication:
    if application.state not in allowed_from:
        raise WrongState(
            _("This application is %(state)s; that cannot be done now.")
            % {"state": application.get_state_display().lower()}
        )
    ApplicationEvent.objects.create(
        application=application,
        author=by,
        from_state=application.state,
        to_state=to,
        message=message.strip(),
    )
    now = timezone.now()
    application.state = to
    application.state_changed_at = now
    for name, value in fields.items():
        setattr(application, name, now if value is timezone.now else value)
    application.save(update_fields=["state", "state_changed_at", "updated_at", *fields])
    return application


def _validate_team(organisation: Organisation, team_members) -> list:
    members = list(team_members or [])
    member_ids = set(
        Membership.objects.filter(organisation=organisation).values_list("user_id", flat=True)
    )
    if any(person.pk not in member_ids for person in members):
        raise ApplicationError(
            _("Team members must belong to the organisation."), field="team_members"
        )
    return members


@transaction.atomic
def application_create(*, organisation: Organisation, acting_user, team_members=(), **details):
    """Start a draft. `details` are the editable fields."""
    application = CreditApplication(organisation=organisation, created_by=acting_user, **details)
    _require_applicant(application, acting_user)
    if not organisation.is_active:
        raise ApplicationError(_("A suspended organisation cannot apply for credits."))
    members = _validate_team(organisation, team_members)
    application.full_clean()
    application.save()
    application.team_members.set(members)
    return application


@transaction.atomic
def application_update(*, application, acting_user, team_members=(), **details):
    application = _locked(application)
    _require_applicant(application, acting_user)
    if application.state not in EDITABLE_STATES:
        raise WrongState(_("Only a draft or an application sent back for changes can be edited."))
    members = _validate_team(application.organisation, team_members)
    for name in EDITABLE_FIELDS:
        if name in details:
            setattr(application, name, details[name])
    application.full_clean()
    application.save()
    application.team_members.set(members)
    return application


@transaction.atomic
def application_submit(*, application, acting_user, ip: str | None = None):
    application = _locked(application)
    _require_applicant(application, acting_user)
    application = _move(
        application,
        to=S.SUBMITTED,
        allowed_from={S.DRAFT, S.CHANGES_REQUESTED},
        by=acting_user,
        submitted_at=timezone.now,
    )
    audit_record(
        actor=acting_user, action=AuditAction.APPLICATION_SUBMITTED, target=application, ip=ip
    )
    return application


@transaction.atomic
def application_withdraw(*, application, acting_user, ip: str | None = None):
    application = _locked(application)
    _require_applicant(application, acting_user)
    application = _move(application, to=S.WITHDRAWN, allowed_from=OPEN_STATES, by=acting_user)
    audit_record(
        actor=acting_user, action=AuditAction.APPLICATION_WITHDRAWN, target=application, ip=ip
    )
    return application


@transaction.atomic
def application_comment(
    *, application, acting_user, message: str, ip: str | None = None
) -> ApplicationEvent:
    """Add to the thread. Applicants (owner/admin) and programme managers may write. Audited
    (the words stay in the thread): a reviewer's message is part of the decision's record."""
    message = (message or "").strip()
    if not message:
        raise ApplicationError(_("Write a message."), field="message")
    is_reviewer = user_is_programme_manager(user=acting_user)
    if not is_reviewer:
        _require_applicant(application, acting_user)
    event = ApplicationEvent.objects.create(
        application=application, author=acting_user, message=message
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.APPLICATION_COMMENTED,
        target=application,
        ip=ip,
        data={"reviewer": is_reviewer},
    )
    if is_reviewer:
        _notify_applicants(application, "credits/email/application_comment", {"message": message})
    return event


@transaction.atomic
def application_review_start(*, application, acting_user, ip: str | None = None):
    application = _locked(application)
    _require_reviewer(application, acting_user)
    application = _move(application, to=S.IN_REVIEW, allowed_from={S.SUBMITTED}, by=acting_user)
    audit_record(
        actor=acting_user, action=AuditAction.APPLICATION_REVIEW_STARTED, target=application, ip=ip
    )
    return application


@transaction.atomic
def application_request_changes(*, application, acting_user, message: str, ip: str | None = None):
    if not (message or "").strip():
        raise ApplicationError(_("Tell the applicant what to change."), field="message")
    application = _locked(application)
    _require_reviewer(application, acting_user)
    application = _move(
        application,
        to=S.CHANGES_REQUESTED,
        allowed_from=DECIDABLE_STATES,
        by=acting_user,
        message=message,
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.APPLICATION_CHANGES_REQUESTED,
        target=application,
        ip=ip,
    )
    _notify_applicants(
        application, "credits/email/application_changes_requested", {"message": message.strip()}
    )
    return application


@transaction.atomic
def application_reject(*, application, acting_user, reason: str, ip: str | None = None):
    if not (reason or "").strip():
        raise ApplicationError(_("Give the applicant a reason."), field="reason")
    application = _locked(application)
    _require_reviewer(application, acting_user)
    application = _move(
        application,
        to=S.REJECTED,
        allowed_from=DECIDABLE_STATES,
        by=acting_user,
        message=reason,
        decided_at=timezone.now,
        decided_by=acting_user,
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.APPLICATION_REJECTED,
        target=application,
        ip=ip,
        data={"reason": reason.strip()},
    )
    _notify_applicants(
        application, "credits/email/application_rejected", {"reason": reason.strip()}
    )
    return application


@transaction.atomic
def application_approve(
    *,
    application,
    acting_user,
    gpu_hours: int,
    expires_at: dt.datetime,
    rate_pkr_per_gpu_hour: Decimal,
    message: str = "",
    ip: str | None = None,
) -> CreditGrant:
    """Grant GPU-hours for an application: all of the request, or part of it (or, rarely, more).

    The grant is a lot with its own expiry and its own PKR rate, fixed now for its lifetime.
    """
    if isinstance(gpu_hours, bool) or not isinstance(gpu_hours, int) or gpu_hours <= 0:
        raise ApplicationError(_("Grant at least one GPU-hour."), field="gpu_hours")
    application = _locked(application)
    _require_reviewer(application, acting_user)
    if not application.organisation.is_active:
        raise ApplicationError(_("The organisation is suspended."))
    partial = gpu_hours < application.requested_gpu_hours
    application = _move(
        application,
        to=S.PARTIALLY_APPROVED if partial else S.APPROVED,
        allowed_from=DECIDABLE_STATES,
        by=acting_user,
        message=message,
        decided_at=timezone.now,
        decided_by=acting_user,
    )
    grant = grant_issue(
        account=account_for_organisation(application.organisation),
        credit_seconds=gpu_hours_to_credit_seconds(gpu_hours),
        rate_pkr_per_gpu_hour=rate_pkr_per_gpu_hour,
        expires_at=expires_at,
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=f"application-approval:{application.public_id}",
        acting_user=acting_user,
        application=application,
        note=application.title,
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.APPLICATION_APPROVED,
        target=application,
        ip=ip,
        data={
            "gpu_hours": gpu_hours,
            "requested_gpu_hours": application.requested_gpu_hours,
            "rate_pkr_per_gpu_hour": str(rate_pkr_per_gpu_hour),
            "expires_at": expires_at.isoformat(),
            "grant": str(grant.public_id),
        },
    )
    _notify_applicants(
        application,
        "credits/email/application_approved",
        {"gpu_hours": gpu_hours, "expires_at": expires_at, "partial": partial},
    )
    return grant


def _notify_applicants(application: CreditApplication, template: str, extra: dict) -> None:
    """E-mail the organisation's owner and admins, each in their own language, after commit."""
    people = (
        Membership.objects.managers()
        .filter(organisation_id=application.organisation_id)
        .select_related("user")
    )
    for membership in people:
        person = membership.user
        mail_send_after_commit(
            template=template,
            to=person.email,
            language=person.language,
            context={
                "title": application.title,
                "organisation": application.organisation.legal_name,
                "url": f"{settings.SITE_URL}/organisations/{application.organisation.slug}"
                f"/applications/{application.public_id}/",
                **extra,
            },
        )
