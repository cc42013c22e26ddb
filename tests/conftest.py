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


TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def totp_activate(user) -> None:
    """Give the person a TOTP authenticator exactly as allauth's own activation flow stores it."""
    TOTP.activate(user, TOTP_SECRET)


def totp_code_now() -> str:
    """The code an authenticator app would show right now for TOTP_SECRET."""
    counter = int(time.time()) // mfa_settings.TOTP_PERIOD
    return format_hotp_value(hotp_value(TOTP_SECRET, counter))


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
