"""Keys with programme scopes carry a programme manager's authority away from the session: one
is made only by a session that passed MFA, after a recent re-authentication (allauth's window),
and lives at most 30 days, whichever door makes it (the page, the service, the CLI)."""

import time

import pytest
from allauth.account import app_settings as account_settings
from allauth.account.authentication import AUTHENTICATION_METHODS_SESSION_KEY
from django.core.management import CommandError, call_command
from django.urls import reverse

from portal.apikeys.models import ApiKey
from portal.apikeys.services import PROGRAMME_MAX_EXPIRY_DAYS, apikey_create
from portal.core.exceptions import ApplicationError
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def _ask(client, *, scopes, days) -> object:
    return client.post(
        reverse("apikeys:list"),
        {"name": "review bot", "owner": "personal", "scopes": scopes, "expires_in_days": days},
    )


def _reauthenticated(client) -> None:
    """allauth's re-authentication, by password, in this session."""
    response = client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    assert response.status_code == 302


def test_a_programme_key_for_more_than_30_days_is_refused_on_the_page(client, programme_manager):
    # given a programme manager in a session that passed MFA, just re-authenticated
    client.force_login(programme_manager)
    _reauthenticated(client)

    # when they ask for a programme key for 31 days
    response = _ask(client, scopes=["programme:read"], days=PROGRAMME_MAX_EXPIRY_DAYS + 1)

    # then it is refused with a clear error, and no key exists
    assert response.status_code == 400
    assert "A key with programme scopes lives at most 30 days." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_programme_key_for_30_days_is_made(client, programme_manager):
    client.force_login(programme_manager)
    _reauthenticated(client)
    response = _ask(client, scopes=["programme:read"], days=PROGRAMME_MAX_EXPIRY_DAYS)
    assert response.status_code == 200
    assert ApiKey.objects.get(user=programme_manager).scopes == ["programme:read"]


def test_the_page_offers_programme_managers_30_days(client, programme_manager):
    client.force_login(programme_manager)
    form = client.get(reverse("apikeys:list")).context["form"]
    assert form.fields["expires_in_days"].initial == PROGRAMME_MAX_EXPIRY_DAYS


def test_a_re_authentication_older_than_allauths_window_is_not_recent(client, programme_manager):
    # given a session that re-authenticated, longer ago than allauth's window
    client.force_login(programme_manager)
    _reauthenticated(client)
    session = client.session
    records = session[AUTHENTICATION_METHODS_SESSION_KEY]
    for record in records:
        record["at"] = time.time() - account_settings.REAUTHENTICATION_TIMEOUT - 1
    session[AUTHENTICATION_METHODS_SESSION_KEY] = records
    session.save()

    # when it asks for a programme key, then it is asked to re-authenticate, and no key exists
    response = _ask(client, scopes=["programme:write"], days=7)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_reauthenticate"))
    assert not ApiKey.objects.exists()


def test_a_key_without_programme_scopes_needs_no_re_authentication(client, programme_manager):
    client.force_login(programme_manager)
    response = _ask(client, scopes=["usage:read"], days=90)
    assert response.status_code == 200
    assert ApiKey.objects.get(user=programme_manager).scopes == ["usage:read"]


def test_the_service_caps_programme_keys_at_30_days(programme_manager):
    with pytest.raises(ApplicationError, match="at most 30 days"):
        apikey_create(
            name="t",
            scopes=["programme:read"],
            acting_user=programme_manager,
            user=programme_manager,
            expires_in_days=PROGRAMME_MAX_EXPIRY_DAYS + 1,
        )
    assert not ApiKey.objects.exists()
    key, _secret = apikey_create(
        name="t",
        scopes=["usage:read"],
        acting_user=programme_manager,
        user=programme_manager,
        expires_in_days=PROGRAMME_MAX_EXPIRY_DAYS + 1,
    )
    assert key.scopes == ["usage:read"]  # other keys keep their longer lives


def test_the_cli_caps_programme_keys_at_30_days(programme_manager):
    with pytest.raises((CommandError, ApplicationError), match="at most 30 days"):
        call_command(
            "apikey",
            "create",
            "--email",
            programme_manager.email,
            "--name",
            "ops",
            "--scopes",
            "programme:read",
            "--expires-days",
            "90",
        )
    assert not ApiKey.objects.exists()
