"""Reads about people."""

from types import SimpleNamespace

from allauth.account.authentication import get_authentication_records
from allauth.account.models import EmailAddress
from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils.translation import gettext_lazy as _

from .models import User

# What a programme manager is told when their session has not passed the second factor.
PROGRAMME_MFA_REQUIRED = _(
    "Programme-manager actions need a sign-in with two-factor authentication."
)


def user_is_programme_manager(*, user) -> bool:
    """Active, signed in and in the programme-managers group. Cached on the user object.

    The role alone grants nothing in a browser session: see `programme_authority`.
    """
    if not (user.is_authenticated and user.is_active) or getattr(user, "is_service_account", False):
        return False
    cached = getattr(user, "_is_programme_manager", None)
    if cached is None:
        cached = user.groups.filter(name=settings.PROGRAMME_MANAGERS_GROUP).exists()
        user._is_programme_manager = cached
    return cached


def programme_manager_exists(user_ref: OuterRef) -> Exists:
    """For a query over rows that name a person (`user_ref`, an OuterRef to their id): they are
    in the programme-managers group. Read with the row, it saves `user_is_programme_manager` its
    own query (see `user_programme_manager_known`)."""
    return Exists(
        User.groups.through.objects.filter(
            user_id=user_ref, group__name=settings.PROGRAMME_MANAGERS_GROUP
        )
    )


def user_programme_manager_known(*, user, is_manager: bool) -> None:
    """Seed `user_is_programme_manager`'s cache with what a query read beside the user (with
    `programme_manager_exists`), in the same statement, so no later read can disagree."""
    user._is_programme_manager = bool(is_manager)


def user_has_mfa(*, user: User) -> bool:
    """The account has a second factor set up. Says nothing about the session in hand."""
    return is_mfa_enabled(user)


def session_passed_mfa(*, session, user) -> bool:
    """This session's sign-in included the second factor.

    allauth records every authentication step of a session, for the person it signed in: "mfa"
    for a TOTP or recovery code, at sign-in or at a re-authentication. An account that has TOTP
    is not enough: a session opened before TOTP was set up, or by any door that skipped the
    code, has no such record. `session` is a Django session (an HTTP request's, or the one a
    WebSocket handshake carried).
    """
    if session is None or user is None or not user.is_authenticated:
        return False
    # allauth reads the records from `request.session` and checks they are this person's.
    records = get_authentication_records(SimpleNamespace(session=session), user)
    return any(record.get("method") == "mfa" for record in records)


def programme_authority(request) -> bool:
    """Programme-manager authority for a browser session: a programme manager, in a session
    that passed MFA. The one check behind the programme pages, the admin, the API with a
    session, programme-scoped keys (made only by such a session), other holders' statements,
    reviewer comments and the cluster stream.

    A request made with an API key is not a session: its authority is the key's scopes.
    """
    user = request.user
    return user_is_programme_manager(user=user) and session_passed_mfa(
        session=getattr(request, "session", None), user=user
    )


def user_has_verified_email(*, user: User) -> bool:
    """The address the person signs in with has been proven to be theirs."""
    return EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()
