"""Reads about people."""

from allauth.account.models import EmailAddress
from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings

from .models import User


def user_is_programme_manager(*, user) -> bool:
    """Active, signed in and in the programme-managers group. Cached on the user object."""
    if not (user.is_authenticated and user.is_active) or getattr(user, "is_service_account", False):
        return False
    cached = getattr(user, "_is_programme_manager", None)
    if cached is None:
        cached = user.groups.filter(name=settings.PROGRAMME_MANAGERS_GROUP).exists()
        user._is_programme_manager = cached
    return cached


def user_has_mfa(*, user: User) -> bool:
    return is_mfa_enabled(user)


def user_has_verified_email(*, user: User) -> bool:
    """The address the person signs in with has been proven to be theirs."""
    return EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()
