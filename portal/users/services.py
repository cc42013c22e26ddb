"""Writes about people: the programme-manager role, ending someone's sessions. (E-mail
normalisation and hub usernames, which creating a User needs, live beside the model.)"""

from collections.abc import Iterable
from importlib import import_module

from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record

from .models import User


@transaction.atomic
def programme_manager_grant(*, user: User, acting_user: User | None, ip: str | None = None) -> User:
    """Give a person the programme-manager role: the group, plus staff access to the admin."""
    group, _ = Group.objects.get_or_create(name=settings.PROGRAMME_MANAGERS_GROUP)
    user.groups.add(group)
    user.__dict__.pop("_is_programme_manager", None)  # the selector's per-object cache
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    audit_record(
        actor=acting_user, action=AuditAction.PROGRAMME_MANAGER_GRANTED, target=user, ip=ip, data={}
    )
    return user


@transaction.atomic
def programme_manager_revoke(
    *, user: User, acting_user: User | None, ip: str | None = None
) -> User:
    """Take the programme-manager role away; superusers keep their staff flag."""
    group = Group.objects.filter(name=settings.PROGRAMME_MANAGERS_GROUP).first()
    if group is not None:
        user.groups.remove(group)
    user.__dict__.pop("_is_programme_manager", None)  # the selector's per-object cache
    if user.is_staff and not user.is_superuser:
        user.is_staff = False
        user.save(update_fields=["is_staff"])
    audit_record(
        actor=acting_user, action=AuditAction.PROGRAMME_MANAGER_REVOKED, target=user, ip=ip, data={}
    )
    return user


def user_sessions_end(*, user_ids: Iterable[int], keep_session_key: str | None = None) -> int:
    """Sign these people out everywhere: delete their sessions (all but `keep_session_key`, the
    one in hand, when given). Returns how many ended.

    allauth's usersessions records each session, indexed by person: at sign-in through allauth,
    and any other (a Django admin sign-in) at its first request, in its middleware. So no scan
    of the whole session table is needed. The next request with a deleted session is anonymous,
    and the live WebSocket streams notice at their next access check (they ask whether the
    session still exists). Sessions are rows in the database (SESSION_ENGINE), so inside a
    transaction they end when it commits, with the rest of it.
    """
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    ended = 0
    sessions = UserSession.objects.filter(user_id__in=list(user_ids))
    if keep_session_key:
        sessions = sessions.exclude(session_key=keep_session_key)
    for session in sessions.order_by("pk"):
        store.delete(session.session_key)
        session.delete()
        ended += 1
    return ended


@transaction.atomic
def user_mfa_enrolled(*, user: User, current_session_key: str | None, ip: str | None = None) -> int:
    """A second factor was just set up: end the account's other sessions, which were opened
    with the password alone (whoever held it then may hold one of them), and keep the one in
    hand, which has just proven the new factor. Audited. Returns how many ended."""
    ended = user_sessions_end(user_ids=[user.pk], keep_session_key=current_session_key)
    audit_record(
        actor=user,
        action=AuditAction.AUTH_OTHER_SESSIONS_ENDED,
        target=user,
        ip=ip,
        data={"reason": "mfa_enrolled", "sessions": ended},
    )
    return ended
