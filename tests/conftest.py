"""Fixtures shared by the whole suite: people in each role, a clean cache, e-mail outbox."""

import time

import pytest
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    hotp_value,
)
from django.conf import settings
from django.core.cache import cache
from django.utils import translation

from portal.organisations.models import Role
from portal.users.services import programme_manager_grant
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory


def _clear_own_cache_keys() -> None:
    # Not cache.clear(): that flushes the whole Redis database, other test runs' keys included.
    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _clean_cache():
    """allauth's rate limits live in the (real, Redis) cache: every test starts from zero."""
    _clear_own_cache_keys()
    yield
    _clear_own_cache_keys()


@pytest.fixture(autouse=True)
def _default_language():
    """Every test starts in the portal's default language: a request in an earlier test leaves
    the language LocaleMiddleware activated (Urdu, say) in the thread."""
    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.activate(settings.LANGUAGE_CODE)


TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def totp_activate(user) -> None:
    """Give the person a TOTP authenticator exactly as allauth's own activation flow stores it."""
    TOTP.activate(user, TOTP_SECRET)


def totp_code_now() -> str:
    """The code an authenticator app would show right now for TOTP_SECRET."""
    counter = int(time.time()) // mfa_settings.TOTP_PERIOD
    return format_hotp_value(hotp_value(TOTP_SECRET, counter))


def record_sign_in(session, user, *, second_factor: bool) -> None:
    """Write into `session` allauth's records of a sign-in by `user`: the password, and the TOTP
    code when `second_factor` (what programme-manager authority looks for)."""
    from allauth.account.authentication import AUTHENTICATION_METHODS_SESSION_KEY
    from allauth.account.internal.flows.login import _AUTHENTICATION_METHODS_USER_SESSION_KEY

    records = [{"method": "password", "at": time.time(), "email": user.email}]
    if second_factor:
        records.append({"method": "mfa", "at": time.time(), "type": "totp"})
    session[AUTHENTICATION_METHODS_SESSION_KEY] = records
    session[_AUTHENTICATION_METHODS_USER_SESSION_KEY] = str(user.pk)
    session.save()


def sign_in_with_password_only(client, user) -> None:
    """A session signed in without the second factor, though the account may have one (one
    opened before TOTP was set up, say)."""
    client.force_login(user)
    record_sign_in(client.session, user, second_factor=False)


@pytest.fixture(autouse=True)
def _force_login_passes_the_second_factor(monkeypatch):
    """`force_login` stands for allauth's whole sign-in, which for a person with an
    authenticator includes the code: their session records it, as a real one would. A test
    that wants a session without it says so (`sign_in_with_password_only`)."""
    from allauth.mfa.models import Authenticator
    from asgiref.sync import sync_to_async
    from django.test.client import ClientMixin

    force_login, aforce_login = ClientMixin.force_login, ClientMixin.aforce_login

    def _record(session, user) -> None:
        if Authenticator.objects.filter(user_id=user.pk).exists():
            record_sign_in(session, user, second_factor=True)

    def patched(self, user, backend=None):
        force_login(self, user, backend)
        _record(self.session, user)

    async def apatched(self, user, backend=None):
        await aforce_login(self, user, backend)
        await sync_to_async(_record)(await self.asession(), user)

    monkeypatch.setattr(ClientMixin, "force_login", patched)
    monkeypatch.setattr(ClientMixin, "aforce_login", apatched)


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def organisation(db):
    return OrganisationFactory()


@pytest.fixture
def owner(organisation):
    return MembershipFactory(organisation=organisation, role=Role.OWNER).user


@pytest.fixture
def admin_member(organisation):
    return MembershipFactory(organisation=organisation, role=Role.ADMIN).user


@pytest.fixture
def member(organisation):
    return MembershipFactory(organisation=organisation, role=Role.MEMBER).user


@pytest.fixture
def programme_manager_without_mfa(db):
    pm = UserFactory(email="manager@programme.gov.pk")
    programme_manager_grant(user=pm, acting_user=None)
    return pm


@pytest.fixture
def programme_manager(programme_manager_without_mfa):
    totp_activate(programme_manager_without_mfa)
    return programme_manager_without_mfa
