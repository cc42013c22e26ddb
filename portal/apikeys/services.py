"""Creating, revoking and checking API keys."""

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.core.mail import mail_send_after_commit
from portal.organisations.models import MANAGER_ROLES, Membership, Role
from portal.users.selectors import programme_manager_exists, user_programme_manager_known

from .keycache import keys_changed
from .models import ApiKey, answerable_is_manager
from .scopes import ALL_SCOPES, PROGRAMME_SCOPES, scopes_allowed_for
from .tokens import key_generate, key_parse, secret_hash, secret_matches

DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 365
PROGRAMME_MAX_EXPIRY_DAYS = 30  # a key with programme authority is short-lived
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class KeyRejected(Exception):  # noqa: N818 - the API layer answers 401 with a fixed message
    """The presented key is malformed, unknown, wrong, revoked, expired, or its owner is
    deactivated. Which one is not told to the caller."""


def _require_can_manage(*, acting_user, user, organisation) -> None:
    if organisation is None:
        if acting_user is not None and acting_user.pk != user.pk:
            raise PermissionDenied(_("You can only manage your own keys."))
        return
    if (
        acting_user is not None
        and not Membership.objects.managers()
        .filter(organisation=organisation, user=acting_user)
        .exists()
    ):
        raise PermissionDenied(_("Only the organisation's owner or an admin can manage its keys."))


def _require_can_answer(*, person, organisation, roles=MANAGER_ROLES) -> None:
    """`person` may answer for one of `organisation`'s keys: an active owner or admin there."""
    if person is None:
        raise ApplicationError(
            _("An organisation's key needs the owner or admin who answers for it."),
            field="answerable_by",
        )
    if not Membership.objects.filter(
        organisation=organisation, user=person, user__is_active=True, role__in=roles
    ).exists():
        if Role.ADMIN not in roles:
            raise PermissionDenied(_("Only the organisation's owner can re-confirm its keys."))
        raise PermissionDenied(
            _("%(email)s is not an owner or admin of %(organisation)s, so cannot answer for keys.")
            % {"email": person.email, "organisation": organisation}
        )


@transaction.atomic
def apikey_create(
    *,
    name: str,
    scopes: Iterable[str],
    acting_user,
    user=None,
    organisation=None,
    answerable_by=None,
    expires_in_days: int | None = None,
    ip: str | None = None,
) -> tuple[ApiKey, str]:
    """Make a key for a person (`user`) or an organisation (a service key). Returns the key and
    the full secret string, which exists nowhere else afterwards: show it once.

    `acting_user` None means the operations CLI. An organisation's key always has a person who
    answers for it, an owner or admin there: the member who makes it, or, from the CLI,
    `answerable_by`.
    """
    if (user is None) == (organisation is None):
        raise ApplicationError(_("A key belongs to a person or to an organisation."))
    _require_can_manage(acting_user=acting_user, user=user, organisation=organisation)
    answerable = None
    if organisation is not None:
        answerable = acting_user or answerable_by
        _require_can_answer(person=answerable, organisation=organisation)
    name = (name or "").strip()
    if not name:
        raise ApplicationError(_("Give the key a name."), field="name")
    scopes = sorted(set(scopes))
    unknown = set(scopes) - ALL_SCOPES
    if not scopes or unknown:
        raise ApplicationError(
            _("Choose one or more scopes from the list.")
            if not unknown
            else _("Unknown scopes: %(scopes)s.") % {"scopes": ", ".join(sorted(unknown))},
            field="scopes",
        )
    allowed = scopes_allowed_for(user=user, organisation=organisation)
    if not set(scopes) <= allowed:
        raise ApplicationError(
            _("This key cannot have: %(scopes)s.")
            % {"scopes": ", ".join(sorted(set(scopes) - allowed))},
            field="scopes",
        )
    if expires_in_days is None:  # unsaid: the default, or the most a programme key may live
        programme = PROGRAMME_SCOPES & set(scopes)
        expires_in_days = PROGRAMME_MAX_EXPIRY_DAYS if programme else DEFAULT_EXPIRY_DAYS
    if (
        isinstance(expires_in_days, bool)
        or not isinstance(expires_in_days, int)
        or not 1 <= expires_in_days <= MAX_EXPIRY_DAYS
    ):
        raise ApplicationError(
            _("A key lives from 1 to %(max)s days.") % {"max": MAX_EXPIRY_DAYS},
            field="expires_in_days",
        )
    if PROGRAMME_SCOPES & set(scopes) and expires_in_days > PROGRAMME_MAX_EXPIRY_DAYS:
        raise ApplicationError(
            _("A key with programme scopes lives at most %(max)s days.")
            % {"max": PROGRAMME_MAX_EXPIRY_DAYS},
            field="expires_in_days",
        )
    full_key, key_id, secret = key_generate()
    key = ApiKey.objects.create(
        key_id=key_id,
        name=name[:100],
        user=user,
        organisation=organisation,
        created_by=acting_user or user or answerable,
        answerable_by=answerable,
        scopes=scopes,
        secret_hash=secret_hash(secret),
        expires_at=timezone.now() + dt.timedelta(days=expires_in_days),
    )
    audit_record(
        actor=acting_user,
        action=AuditAction.APIKEY_CREATED,
        target=organisation or user,
        ip=ip,
        data={
            "key_id": key_id,
            "name": key.name,
            "scopes": scopes,
            **({"answerable_by": answerable.email} if answerable else {}),
        },
    )
    for person in _owners_to_tell(key):
        mail_send_after_commit(
            template="apikeys/email/created",
            to=person.email,
            language=person.language,
            context={
                "name": key.name,
                "prefix": key.display_prefix,
                "scopes": ", ".join(scopes),
                "expires_at": key.expires_at,
                "holder": str(organisation or user),
                "url": f"{settings.SITE_URL}/api-keys/",
            },
        )
    return key, full_key


def _owners_to_tell(key: ApiKey) -> list:
    if key.user_id:
        return [key.user]
    memberships = (
        Membership.objects.managers()
        .filter(organisation_id=key.organisation_id)
        .select_related("user")
    )
    return [m.user for m in memberships]


@transaction.atomic
def apikey_revoke(*, key: ApiKey, acting_user, ip: str | None = None) -> ApiKey:
    """Kill a key. The very next request with it is refused: processes that remember who a
    key is (the model gateway) forget it as this returns (keycache), the others read the
    database on every request."""
    _require_can_manage(acting_user=acting_user, user=key.user, organisation=key.organisation)
    updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if not updated:
        raise ApplicationError(_("This key was already revoked."))
    keys_changed()  # an UPDATE sends no post_save
    audit_record(
        actor=acting_user,
        action=AuditAction.APIKEY_REVOKED,
        target=key.organisation or key.user,
        ip=ip,
        data={"key_id": key.key_id, "name": key.name},
    )
    key.refresh_from_db()
    return key


@transaction.atomic
def apikey_reconfirm(*, key: ApiKey, acting_user, owner=None, ip: str | None = None) -> ApiKey:
    """An owner takes an organisation's key on: they answer for it from now on, and it works
    again if it had stopped because the person who answered for it left or was demoted.

    `acting_user` None means the operations CLI, which names the `owner`.
    """
    owner = acting_user or owner
    if not key.organisation_id:
        raise ApplicationError(_("Only an organisation's key is confirmed by its owner."))
    _require_can_answer(person=owner, organisation=key.organisation, roles=(Role.OWNER,))
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.revoked_at is not None or locked.expires_at <= timezone.now():
        raise ApplicationError(_("This key is revoked or expired; make a new one."))
    previous = locked.answerable_by
    locked.answerable_by = owner
    locked.save(update_fields=["answerable_by", "updated_at"])
    audit_record(
        actor=acting_user,
        action=AuditAction.APIKEY_RECONFIRMED,
        target=key.organisation,
        ip=ip,
        data={
            "key_id": locked.key_id,
            "name": locked.name,
            "answerable_by": owner.email,
            "previously": previous.email if previous else None,
        },
    )
    return locked


def apikeys_answerable_left(*, organisation, user) -> list[ApiKey]:
    """After `user` was removed from `organisation` or demoted below admin: the organisation's
    keys they answered for have stopped working (apikey_authenticate checks this on every
    request). Tell the owners, once the change commits, so they re-confirm or revoke them.
    Returns those keys; nothing when the person still answers (say, they are admin again)."""
    keys = list(
        ApiKey.objects.filter(
            organisation=organisation,
            answerable_by=user,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .annotate(answerable_in_place=answerable_is_manager())
        .filter(answerable_in_place=False)
        .order_by("created_at")
    )
    if not keys:
        return []
    owners = Membership.objects.filter(
        organisation=organisation, role=Role.OWNER, user__is_active=True
    ).select_related("user")
    for membership in owners:
        mail_send_after_commit(
            template="apikeys/email/unconfirmed",
            to=membership.user.email,
            language=membership.user.language,
            context={
                "organisation": str(organisation),
                "person": user.email,
                "keys": [f"{key.name} ({key.display_prefix})" for key in keys],
                "url": f"{settings.SITE_URL}/api-keys/",
            },
        )
    return keys


def apikey_authenticate(*, raw: str, ip: str | None, record_use: bool = True) -> ApiKey:
    """The live key a request presents, with its owner loaded; KeyRejected otherwise.

    One indexed query, which also reads whether a person's key's owner is a programme manager
    (what their scopes depend on). The secret is compared in constant time against its HMAC;
    a malformed key or a bad checksum is refused before the database is asked.
    `record_use=False` only reads: the live WebSocket streams check keys too, and never write
    to the database.
    """
    parsed = key_parse(raw)
    if parsed is None:
        raise KeyRejected
    key = (
        ApiKey.objects.select_related("user", "organisation", "answerable_by")
        .annotate(
            answerable_in_place=answerable_is_manager(),
            owner_is_programme_manager=programme_manager_exists(OuterRef("user_id")),
        )
        .filter(key_id=parsed.key_id)
        .first()
    )
    if key is None or not secret_matches(parsed.secret, key.secret_hash):
        raise KeyRejected
    now = timezone.now()
    if key.revoked_at is not None or key.expires_at <= now:
        raise KeyRejected
    if key.user_id and not key.user.is_active:
        raise KeyRejected
    if key.user_id:  # the scope check needs it: read here, in the same statement as the key
        user_programme_manager_known(user=key.user, is_manager=key.owner_is_programme_manager)
    if key.organisation_id and not key.organisation.is_active:
        raise KeyRejected
    # An organisation's key answers to a person: once they are no longer an owner or admin
    # there (removed, demoted, deactivated), it is refused from this very request on, until an
    # owner re-confirms it. Checked here, in the same query, so there is no window.
    if key.organisation_id and not key.answerable_in_place:
        raise KeyRejected
    if record_use and apikey_use_due(last_used_at=key.last_used_at, now=now):
        apikey_use_record(key_pk=key.pk, ip=ip, now=now)
    return key


def apikey_use_due(*, last_used_at, now) -> bool:
    """Whether a use at `now` should be written (at most one write a minute per key)."""
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION


def apikey_use_record(*, key_pk: int, ip: str | None, now) -> None:
    """Write a key's last use, unless one was written less than a minute before `now`:
    whichever process gets there first writes; the others' UPDATE matches no row."""
    ApiKey.objects.filter(pk=key_pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now, last_used_ip=ip)


def apikey_effective_scopes(key: ApiKey) -> frozenset[str]:
    """The key's scopes that its owner may still use now."""
    allowed = scopes_allowed_for(user=key.user, organisation=key.organisation)
    return frozenset(key.scopes) & allowed
