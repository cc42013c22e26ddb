"""Suspend and reactivate an organisation or a student: one pair of services over both.

`suspend(subject=..., ...)` and `reactivate(subject=..., ...)` take an `Organisation` or a
student's `User`. What differs between the two is how the subject's row is found and locked,
whose sessions end and which sandboxes and keys are theirs (a `_Kind` says it); the checks, the
locking order, the stopping of sandboxes, the ending of sessions and the audit are shared.

Suspending an organisation:

- `is_active` goes False: launches, restarts, grants, applications and invitations are refused
  from here on, and its service keys answer 401 (apikey_authenticate checks the flag on every
  request; the keys are not revoked, so a reactivation restores them).
- Its live sandboxes are stopped through the launcher (the hub stops them in Celery), with the
  reason "Suspended by the programme"; their home volumes stay.
- Its members' sessions end, everywhere. Their accounts stay active (a member may belong to
  another organisation, or be a student), so they may sign in again, and then find the
  organisation suspended. Ending the sessions is what closes the organisation's pages and live
  streams that are open now (the live consumers re-check the session periodically); the cost is
  one sign-in for a member of several organisations.

  The members' rows are locked before the sandboxes are looked for: a launch holds its person's
  row until it commits, so a launch that raced this suspension either sees it (and is refused)
  or is committed first and stopped here. A programme manager who is a member of the
  organisation cannot suspend it (nor lock themselves out with it).

Suspending a student: the person's account is deactivated (`User.is_active` False). The flag is
Django's own, and everything already honours it, so no new field had to be taught to each of
them: sign-in is refused (allauth's "account inactive" page), a session that survived would
resolve to nobody (the auth backend refuses inactive people), the person's API keys answer 401
(not revoked: a reactivation restores them), the spawner's entitlement check refuses a start,
the live streams close, the monthly allowance skips them and grants are refused. It suspends the
person, not only the student role: if they also belong to an organisation, they cannot act for
it either. Their live sandboxes (whoever pays) are stopped and their sessions deleted, as for an
organisation's members. The person's row is locked first: a launch holds it until it commits, so
a racing launch is either refused or stopped here. Refused for oneself and for programme
managers (their role is taken away in the admin first).

Both are idempotent: suspending a suspended subject, or reactivating an active one, changes
nothing (`changed` False). A reactivation sets the flag back, so unexpired, unrevoked keys work
again and people may sign in and launch again; stopped sandboxes stay stopped (their owners
start them again). A student's reactivation also grants, after the commit, this month's
allowance, which the monthly run skipped while they were suspended (once: it is idempotent per
month).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from portal.apikeys.selectors import api_key_ids_in_force
from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.onboarding.models import StudentProfile
from portal.onboarding.tasks import student_allowance_grant_task
from portal.organisations.models import Membership, Organisation
from portal.users.models import User
from portal.users.selectors import user_is_programme_manager
from portal.users.services import user_sessions_end
from sandboxes.launcher.leaving import hub_sessions_end
from sandboxes.launcher.models import Sandbox
from sandboxes.launcher.services import sandboxes_stop_live
from sandboxes.launcher.status_messages import note

SUSPENSION_REASON_MAX_LENGTH = 500


@dataclass
class SuspensionOutcome:
    """What a suspension or reactivation did: `changed` is False when there was nothing to do
    (already suspended, already active)."""

    changed: bool
    sandboxes_stopped: list[str] = field(default_factory=list)  # public ids
    sessions_ended: int = 0


def suspension_check(*, acting_user, reason: str) -> str:
    """The checks every suspension and reactivation shares: a programme manager acts, with a
    reason. Returns the reason, trimmed."""
    if not user_is_programme_manager(user=acting_user):
        raise PermissionDenied(_("Only programme managers can suspend or reactivate."))
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError(_("Give a reason."), field="reason")
    if len(reason) > SUSPENSION_REASON_MAX_LENGTH:
        raise ApplicationError(
            _("Keep the reason under %(n)s characters.") % {"n": SUSPENSION_REASON_MAX_LENGTH},
            field="reason",
        )
    return reason


def suspension_enforce(*, sandboxes, user_ids, acting_user, ip: str | None = None):
    """What a suspension does at once, for a student or an organisation: stop the live
    sandboxes (reason "Suspended by the programme"; their home volumes stay) through the
    launcher, and end the people's sessions. Returns the SuspensionOutcome to audit."""
    stopped = sandboxes_stop_live(
        sandboxes=sandboxes,
        acting_user=acting_user,
        reason=note("suspended"),
        ip=ip,
    )
    return SuspensionOutcome(
        changed=True,
        sandboxes_stopped=[str(sandbox.public_id) for sandbox in stopped],
        sessions_ended=user_sessions_end(user_ids=user_ids),
    )


# --- The two kinds of subject -----------------------------------------------------------------


def _organisation_locked(organisation: Organisation, acting_user: User) -> Organisation:
    # FOR NO KEY UPDATE: a launch inserting a sandbox that refers to this row (FOR KEY SHARE)
    # is not blocked by it, so it cannot deadlock with the members' locks below.
    organisation = Organisation.objects.select_for_update(no_key=True).get(pk=organisation.pk)
    if Membership.objects.filter(organisation=organisation, user=acting_user).exists():
        raise PermissionDenied(
            _(
                "You are a member of this organisation: another programme manager must decide "
                "on its suspension."
            )
        )
    return organisation


def _organisation_members_locked(organisation: Organisation) -> list[int]:
    return list(
        User.objects.select_for_update(of=("self",), no_key=True)
        .filter(memberships__organisation=organisation)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _student_locked(student: User, acting_user: User) -> User:
    if not StudentProfile.objects.filter(user_id=student.pk).exists():
        raise ApplicationError(_("This person is not a student."))
    if student.pk == acting_user.pk:
        raise PermissionDenied(_("You cannot suspend or reactivate yourself."))
    student = User.objects.select_for_update(no_key=True).get(pk=student.pk)
    if user_is_programme_manager(user=student):
        raise PermissionDenied(
            _("This person is a programme manager: take the role away in the admin first.")
        )
    return student


def _student_reactivated(student: User) -> None:
    user_id = student.pk
    transaction.on_commit(lambda: student_allowance_grant_task.delay(user_id=user_id))


@dataclass(frozen=True)
class _Kind:
    """How a suspension reads one kind of subject."""

    suspended_action: AuditAction
    reactivated_action: AuditAction
    update_fields: list[str]
    # The subject's row, re-read and locked; refuses what this programme manager may not decide.
    locked: Callable
    # Whose sessions end, their rows locked (the subject already is), in primary-key order.
    people: Callable[..., list[int]]
    sandboxes: Callable[..., QuerySet]
    holder: Callable[..., dict]  # the subject as api_key_ids_in_force's holder
    counts_people: bool  # the audit records how many people there were
    reactivated: Callable | None = None  # what else a reactivation does, after the flag


ORGANISATION = _Kind(
    suspended_action=AuditAction.ORGANISATION_SUSPENDED,
    reactivated_action=AuditAction.ORGANISATION_REACTIVATED,
    update_fields=["is_active", "updated_at"],
    locked=_organisation_locked,
    people=_organisation_members_locked,
    sandboxes=lambda organisation: Sandbox.objects.filter(organisation=organisation),
    holder=lambda organisation: {"organisation": organisation},
    counts_people=True,
)
STUDENT = _Kind(
    suspended_action=AuditAction.STUDENT_SUSPENDED,
    reactivated_action=AuditAction.STUDENT_REACTIVATED,
    update_fields=["is_active"],
    locked=_student_locked,
    people=lambda student: [student.pk],
    sandboxes=lambda student: Sandbox.objects.filter(user=student),
    holder=lambda student: {"user": student},
    counts_people=False,
    reactivated=_student_reactivated,
)


def _kind_of(subject) -> _Kind:
    if isinstance(subject, Organisation):
        return ORGANISATION
    if isinstance(subject, User):
        return STUDENT
    raise TypeError(f"cannot suspend {type(subject).__name__}")


# --- The services -----------------------------------------------------------------------------


@transaction.atomic
def suspend(*, subject, reason: str, acting_user: User, ip: str | None = None) -> SuspensionOutcome:
    """Suspend an organisation or a student at once, keeping everything they own for a
    reactivation (see the module's docstring for what each one means). Idempotent."""
    reason = suspension_check(acting_user=acting_user, reason=reason)
    kind = _kind_of(subject)
    subject = kind.locked(subject, acting_user)
    if not subject.is_active:
        return SuspensionOutcome(changed=False)
    subject.is_active = False
    subject.save(update_fields=kind.update_fields)
    people = kind.people(subject)
    outcome = suspension_enforce(
        sandboxes=kind.sandboxes(subject), user_ids=people, acting_user=acting_user, ip=ip
    )
    hub_sessions_end(user_ids=people, reason=kind.suspended_action)
    audit_record(
        actor=acting_user,
        action=kind.suspended_action,
        target=subject,
        ip=ip,
        data={
            "reason": reason,
            "sandboxes_stopped": outcome.sandboxes_stopped,
            "sessions_ended": outcome.sessions_ended,
            **({"members": len(people)} if kind.counts_people else {}),
            "api_keys_suspended": api_key_ids_in_force(**kind.holder(subject)),
        },
    )
    return outcome


@transaction.atomic
def reactivate(
    *, subject, reason: str, acting_user: User, ip: str | None = None
) -> SuspensionOutcome:
    """Lift a suspension: the flag back to True, so unexpired, unrevoked keys work again and
    people may sign in and launch again; stopped sandboxes stay stopped. A student also gets
    this month's allowance after the commit. Idempotent, like the suspension."""
    reason = suspension_check(acting_user=acting_user, reason=reason)
    kind = _kind_of(subject)
    subject = kind.locked(subject, acting_user)
    if subject.is_active:
        return SuspensionOutcome(changed=False)
    subject.is_active = True
    subject.save(update_fields=kind.update_fields)
    audit_record(
        actor=acting_user,
        action=kind.reactivated_action,
        target=subject,
        ip=ip,
        data={
            "reason": reason,
            "api_keys_restored": api_key_ids_in_force(**kind.holder(subject)),
        },
    )
    if kind.reactivated is not None:
        kind.reactivated(subject)
    return SuspensionOutcome(changed=True)
