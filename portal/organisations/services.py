"""Writes about organisations: creation, invitations, roles, removal, ownership transfer.
Suspension by the programme is portal.suspension's.

Every function takes the acting person and refuses what their role does not allow, so the HTML
views and (later) the API share one set of rules.
"""

import datetime as dt

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.core.mail import mail_send_after_commit
from portal.users.models import User, email_normalise

from .models import Invitation, Membership, Organisation, Role
from .signals import membership_changed_send

INVITATION_SALT = "portal.organisations.invitation"
# Invitations send e-mail from the programme's domain to any address: a limit per inviter and per
# organisation keeps a hostile (or compromised) account from using the portal to spam.
INVITATION_RATE_WINDOW_SECONDS = 3600


def _membership_of(*, organisation: Organisation, user: User, lock: bool = False) -> Membership:
    memberships = Membership.objects.filter(organisation=organisation, user=user)
    if lock:
        memberships = memberships.select_for_update()
    membership = memberships.first()
    if membership is None:
        raise PermissionDenied(_("You are not a member of this organisation."))
    return membership


def _require_manager(*, organisation: Organisation, user: User) -> Membership:
    membership = _membership_of(organisation=organisation, user=user)
    if not membership.can_manage_members:
        raise PermissionDenied(_("Only the organisation's owner or an admin can do this."))
    return membership


def _require_owner(*, organisation: Organisation, user: User) -> Membership:
    membership = _membership_of(organisation=organisation, user=user)
    if membership.role != Role.OWNER:
        raise PermissionDenied(_("Only the organisation's owner can do this."))
    return membership


def _unique_slug(legal_name: str) -> str:
    base = slugify(legal_name)[:50].strip("-") or "organisation"
    slug, n = base, 1
    while Organisation.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def organisation_create(*, owner: User, ip: str | None = None, **details) -> Organisation:
    """Register a company with `owner` as its owner. `details` are the Organisation fields."""
    if Organisation.objects.filter(
        secp_registration_number=details["secp_registration_number"]
    ).exists():
        raise ApplicationError(
            _("A company with this SECP registration number is already registered."),
            field="secp_registration_number",
        )
    if details.get("ntn") and Organisation.objects.filter(ntn=details["ntn"]).exists():
        raise ApplicationError(_("A company with this NTN is already registered."), field="ntn")
    try:
        with transaction.atomic():
            organisation = Organisation.objects.create(
                slug=_unique_slug(details["legal_name"]), created_by=owner, **details
            )
    except IntegrityError as exc:  # a concurrent registration of the same company won
        raise ApplicationError(
            _("A company with this SECP registration number or NTN is already registered."),
            field="secp_registration_number",
        ) from exc
    Membership.objects.create(organisation=organisation, user=owner, role=Role.OWNER)
    audit_record(
        actor=owner,
        action=AuditAction.ORGANISATION_CREATED,
        target=organisation,
        ip=ip,
        data={"secp_registration_number": organisation.secp_registration_number},
    )
    return organisation


def _invitation_rate_hit(*, organisation: Organisation, inviter: User) -> None:
    """Count one invitation for the inviter and for the organisation, in fixed one-hour windows
    kept in the Redis cache (add-then-incr is atomic there, so a burst from many processes is
    cut at the limit); refuse once either is over INVITATIONS_PER_HOUR."""
    limit = getattr(settings, "INVITATIONS_PER_HOUR", 20)
    window_seconds = INVITATION_RATE_WINDOW_SECONDS
    now = timezone.now().timestamp()
    window = int(now // window_seconds)
    over = False
    for bucket in (f"inviter:{inviter.pk}", f"organisation:{organisation.pk}"):
        key = f"ratelimit:invitations:{bucket}:{window}"
        cache.add(key, 0, timeout=window_seconds + 1)
        over = cache.incr(key) > limit or over
    if over:
        minutes = max(1, int(((window + 1) * window_seconds - now + 59) // 60))
        raise ApplicationError(
            _(
                "Too many invitations: at most %(limit)s an hour may be sent, by you and for "
                "this organisation. Try again in %(minutes)s minutes."
            )
            % {"limit": limit, "minutes": minutes},
            code="rate_limited",
        )


def invitation_token(invitation: Invitation) -> str:
    return signing.dumps(str(invitation.public_id), salt=INVITATION_SALT, compress=False)


def invitation_url(invitation: Invitation) -> str:
    path = reverse(
        "organisations:invitation_accept", kwargs={"token": invitation_token(invitation)}
    )
    return f"{settings.SITE_URL}{path}"


@transaction.atomic
def invitation_create(
    *,
    organisation: Organisation,
    email: str,
    role: str,
    acting_user: User,
    ip: str | None = None,
) -> Invitation:
    """Invite an address to join; an open invitation to the same address is replaced."""
    _require_manager(organisation=organisation, user=acting_user)
    email = email_normalise(email)
    if role not in (Role.ADMIN, Role.MEMBER):
        raise ApplicationError(_("Invite people as an admin or a member."), field="role")
    if Membership.objects.filter(organisation=organisation, user__email__iexact=email).exists():
        raise ApplicationError(_("This person is already a member."), field="email")
    _invitation_rate_hit(organisation=organisation, inviter=acting_user)
    # Lock the organisation so two managers inviting the same address at once serialise here.
    Organisation.objects.select_for_update().get(pk=organisation.pk)
    now = timezone.now()
    Invitation.objects.filter(
        organisation=organisation,
        email__iexact=email,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
    ).update(revoked_at=now)
    invitation = Invitation.objects.create(
        organisation=organisation,
        email=email,
        role=role,
        invited_by=acting_user,
        expires_at=now + dt.timedelta(days=settings.INVITATION_MAX_AGE_DAYS),
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.INVITATION_CREATED,
        target=organisation,
        ip=ip,
        data={"email": email, "role": role, "invitation": str(invitation.public_id)},
    )
    mail_send_after_commit(
        template="organisations/email/invitation",
        to=email,
        context={
            "organisation": organisation.legal_name,
            "inviter": acting_user.get_full_name(),
            "role": invitation.get_role_display(),
            "url": invitation_url(invitation),
            "days": settings.INVITATION_MAX_AGE_DAYS,
        },
    )
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, acting_user: User, ip: str | None = None) -> None:
    _require_manager(organisation=invitation.organisation, user=acting_user)
    updated = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    if not updated:
        raise ApplicationError(_("This invitation has already been used or withdrawn."))
    audit_record(
        actor=acting_user,
        action=AuditAction.INVITATION_REVOKED,
        target=invitation.organisation,
        ip=ip,
        data={"email": invitation.email, "invitation": str(invitation.public_id)},
    )


def invitation_from_token(*, token: str) -> Invitation:
    """The invitation a link names, checked for signature, expiry, use and withdrawal."""
    max_age = dt.timedelta(days=settings.INVITATION_MAX_AGE_DAYS)
    try:
        public_id = signing.loads(token, salt=INVITATION_SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise ApplicationError(_("This invitation has expired. Ask for a new one.")) from exc
    except signing.BadSignature as exc:
        raise ApplicationError(_("This invitation link is not valid.")) from exc
    invitation = (
        Invitation.objects.select_related("organisation").filter(public_id=public_id).first()
    )
    if invitation is None:
        raise ApplicationError(_("This invitation link is not valid."))
    if invitation.accepted_at is not None:
        raise ApplicationError(_("This invitation has already been used."))
    if invitation.revoked_at is not None:
        raise ApplicationError(_("This invitation has been withdrawn."))
    if invitation.is_expired:
        raise ApplicationError(_("This invitation has expired. Ask for a new one."))
    if not invitation.organisation.is_active:
        raise ApplicationError(_("This organisation is suspended."))
    return invitation


@transaction.atomic
def invitation_accept(*, token: str, user: User, ip: str | None = None) -> Membership:
    """Join the organisation an invitation names. The link works once, for the invited address."""
    invitation = invitation_from_token(token=token)
    # Re-read under a row lock: two tabs accepting at once must not both succeed.
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise ApplicationError(_("This invitation has already been used."))
    if email_normalise(user.email) != email_normalise(invitation.email):
        raise ApplicationError(
            _("This invitation was sent to %(email)s. Sign in with that address to accept it.")
            % {"email": invitation.email}
        )
    if Membership.objects.filter(organisation=invitation.organisation, user=user).exists():
        raise ApplicationError(_("You are already a member of this organisation."))
    membership = Membership.objects.create(
        organisation=invitation.organisation, user=user, role=invitation.role
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
    audit_record(
        actor=user,
        action=AuditAction.INVITATION_ACCEPTED,
        target=invitation.organisation,
        ip=ip,
        data={"role": invitation.role, "invitation": str(invitation.public_id)},
    )
    return membership


@transaction.atomic
def membership_role_change(
    *, membership: Membership, role: str, acting_user: User, ip: str | None = None
) -> Membership:
    """Make a member an admin or an admin a member. Ownership moves only by transfer."""
    organisation = membership.organisation
    _require_owner(organisation=organisation, user=acting_user)
    if role not in (Role.ADMIN, Role.MEMBER):
        raise ApplicationError(
            _("Choose admin or member. To hand over the organisation, transfer ownership."),
            field="role",
        )
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER:
        raise ApplicationError(_("The owner's role changes only by transferring ownership."))
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    # Every role may run on the account today, so no sandbox stops unless that rule changes; an
    # admin made a member no longer answers for the organisation's API keys.
    effects = membership_changed_send(
        organisation=organisation, user=membership.user, acting_user=acting_user, ip=ip,
        removed=False,
    )  # fmt: skip
    audit_record(
        actor=acting_user,
        action=AuditAction.MEMBERSHIP_ROLE_CHANGED,
        target=organisation,
        ip=ip,
        data={"user": membership.user.email, "from": previous, "to": role, **effects},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, acting_user: User, ip: str | None = None) -> None:
    """Remove a person. Owners remove anyone but themselves; admins remove members; anyone but the
    owner may leave."""
    organisation = membership.organisation
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER:
        raise ApplicationError(
            _("The owner cannot be removed. Transfer ownership to someone else first.")
        )
    if membership.user_id != acting_user.pk:
        acting = _require_manager(organisation=organisation, user=acting_user)
        if acting.role == Role.ADMIN and membership.role != Role.MEMBER:
            raise PermissionDenied(_("Only the owner can remove an admin."))
    membership.delete()
    # Leaving stops what they run on this organisation's account (their home volume stays), ends
    # their hub session, so no notebook tab or hub token of theirs outlives the removal, and
    # stops the organisation's keys they answered for (sandboxes.launcher.receivers,
    # portal.apikeys.receivers).
    effects = membership_changed_send(
        organisation=organisation, user=membership.user, acting_user=acting_user, ip=ip,
        removed=True,
    )  # fmt: skip
    audit_record(
        actor=acting_user,
        action=AuditAction.MEMBERSHIP_REMOVED,
        target=organisation,
        ip=ip,
        data={"user": membership.user.email, "role": membership.role, **effects},
    )


@transaction.atomic
def ownership_transfer(
    *, organisation: Organisation, new_owner: Membership, acting_user: User, ip: str | None = None
) -> None:
    """Hand the organisation to another member; the previous owner stays on as an admin."""
    current = _require_owner(organisation=organisation, user=acting_user)
    if new_owner.organisation_id != organisation.pk:
        raise ApplicationError(_("That person is not a member of this organisation."))
    if new_owner.pk == current.pk:
        raise ApplicationError(_("You already own this organisation."))
    # Lock both rows in primary-key order, then demote before promoting (one owner at a time).
    locked = {
        m.pk: m
        for m in Membership.objects.select_for_update()
        .filter(pk__in=[current.pk, new_owner.pk])
        .order_by("pk")
    }
    Membership.objects.filter(pk=current.pk).update(role=Role.ADMIN, updated_at=timezone.now())
    Membership.objects.filter(pk=new_owner.pk).update(role=Role.OWNER, updated_at=timezone.now())
    # The previous owner is demoted to admin, who may still run on the account: nothing stops
    # unless that rule changes.
    effects = membership_changed_send(
        organisation=organisation, user=acting_user, acting_user=acting_user, ip=ip,
        removed=False,
    )  # fmt: skip
    audit_record(
        actor=acting_user,
        action=AuditAction.ORGANISATION_OWNERSHIP_TRANSFERRED,
        target=organisation,
        ip=ip,
        data={"from": acting_user.email, "to": locked[new_owner.pk].user.email, **effects},
    )
