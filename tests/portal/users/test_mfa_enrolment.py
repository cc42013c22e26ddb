"""Setting up TOTP: the account's other sessions end (whoever held the password may hold one),
the session in hand keeps going and counts as having passed MFA; the secret is stored
encrypted under MFA_ENCRYPTION_KEY, and still verifies."""

import time

import pytest
from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, hotp_value
from django.apps import apps
from django.db import connection
from django.test import Client
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.users.adapters import MFA_SECRET_PREFIX
from portal.users.selectors import session_passed_mfa
from tests.conftest import TOTP_SECRET, totp_activate, totp_code_now
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

ENCRYPTION_MIGRATION = "portal.users.migrations.0002_encrypt_mfa_secrets"


def _code(secret: str) -> str:
    counter = int(time.time()) // mfa_settings.TOTP_PERIOD
    return format_hotp_value(hotp_value(secret, counter))


def _signed_in(user) -> Client:
    """A browser that signed in and made a request (allauth's usersessions records it)."""
    client = Client()
    client.force_login(user)
    assert client.get(reverse("onboarding:start")).status_code in (200, 302)
    return client


def _raw_data(authenticator_pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CAST(data AS TEXT) FROM mfa_authenticator WHERE id = %s", [authenticator_pk]
        )
        return cursor.fetchone()[0]


def _activate_totp(client, django_capture_on_commit_callbacks=None) -> str:
    """allauth's own flow: re-enter the password, read the offered secret, confirm a code.
    allauth sends its signal on commit: in a test inside a transaction, captured and run."""
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = client.session["mfa.totp.secret"]
    if django_capture_on_commit_callbacks is None:  # a transactional test: commits are real
        response = client.post(reverse("mfa_activate_totp"), {"code": _code(secret)})
    else:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("mfa_activate_totp"), {"code": _code(secret)})
    assert response.status_code == 302, response.content[:500]
    return secret


@pytest.mark.django_db(transaction=True)  # allauth's signal runs on a real commit, in the view
def test_enrolling_ends_the_other_sessions_and_keeps_this_one(programme_manager_without_mfa):
    # given a programme manager signed in twice: here, and somewhere an attacker with the
    # password also signed in
    manager = programme_manager_without_mfa
    here = _signed_in(manager)
    elsewhere = _signed_in(manager)

    # when they set up TOTP here
    _activate_totp(here)

    # then the other session is over, this one goes on and has passed MFA, and it is audited
    assert elsewhere.get(reverse("apikeys:list")).status_code == 302
    assert here.get(reverse("apikeys:list")).status_code == 200
    assert session_passed_mfa(session=here.session, user=manager)
    assert here.get(reverse("dashboard:overview")).status_code == 200
    event = AuditEvent.objects.get(action="auth.other_sessions_ended")
    assert event.actor == manager
    assert event.data == {"reason": "mfa_enrolled", "sessions": 1}


def test_the_totp_secret_is_stored_encrypted_and_still_verifies(
    user, django_capture_on_commit_callbacks
):
    # given someone who set up TOTP through allauth's flow
    client = _signed_in(user)
    secret = _activate_totp(client, django_capture_on_commit_callbacks)
    authenticator = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)

    # then the database row does not hold the secret, in any form a reader could use
    raw = _raw_data(authenticator.pk)
    assert secret not in raw
    assert authenticator.data["secret"].startswith(MFA_SECRET_PREFIX)

    # and the code from their authenticator app still verifies
    assert TOTP(authenticator).validate_code(_code(secret))


def test_the_recovery_codes_seed_is_stored_encrypted(user, django_capture_on_commit_callbacks):
    client = _signed_in(user)
    _activate_totp(client, django_capture_on_commit_callbacks)
    codes = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    assert codes.data["seed"].startswith(MFA_SECRET_PREFIX)
    assert len(codes.wrap().get_unused_codes()) == mfa_settings.RECOVERY_CODE_COUNT


def test_a_secret_planted_in_plaintext_does_not_verify(user):
    # given someone who can write the table plants a secret they know
    totp_activate(user)
    authenticator = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    Authenticator.objects.filter(pk=authenticator.pk).update(data={"secret": TOTP_SECRET})
    authenticator.refresh_from_db()

    # then a code from it is not accepted
    with pytest.raises(ValueError, match="not encrypted"):
        TOTP(authenticator).validate_code(totp_code_now())


def test_the_migration_encrypts_secrets_stored_before_and_can_be_run_again(user):
    # given a TOTP secret and a recovery seed stored in plaintext, as before the adapter
    from importlib import import_module

    migration = import_module(ENCRYPTION_MIGRATION)
    totp = Authenticator.objects.create(
        user=user, type=Authenticator.Type.TOTP, data={"secret": TOTP_SECRET}
    )
    seed = "ab" * 40
    codes = Authenticator.objects.create(
        user=user, type=Authenticator.Type.RECOVERY_CODES, data={"seed": seed, "used_mask": 0}
    )

    # when the data migration runs (twice: a second run changes nothing)
    migration.encrypt(apps, None)
    totp.refresh_from_db()
    once = totp.data["secret"]
    migration.encrypt(apps, None)
    totp.refresh_from_db()
    codes.refresh_from_db()

    # then both are encrypted, the code still verifies, and the seed decrypts to what it was
    assert totp.data["secret"] == once
    assert once.startswith(MFA_SECRET_PREFIX)
    assert TOTP_SECRET not in _raw_data(totp.pk)
    assert seed not in _raw_data(codes.pk)
    assert TOTP(totp).validate_code(totp_code_now())
    assert codes.data["used_mask"] == 0

    # and going back restores the plaintext
    migration.decrypt(apps, None)
    totp.refresh_from_db()
    assert totp.data["secret"] == TOTP_SECRET
