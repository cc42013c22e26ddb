"""The portal and the hub are two trust domains: two host names (cookies ignore ports), and every
user's notebook servers on a host of their own below the hub's. The settings refuse a layout
that shares a host, and an old development file that did is moved to the new names."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from jwcrypto.jwk import JWK

from portal.core.checks import hub_on_its_own_host
from tests.portal.users.test_oidc import HUB_ENV_KEYS, _env_values


def ids(settings) -> list[str]:
    return [message.id for message in hub_on_its_own_host()]


def test_the_default_layout_puts_the_hub_on_a_host_of_its_own(settings):
    assert settings.HUB_PUBLIC_URL == "http://hub.localhost:8001"
    assert ids(settings) == []


@pytest.mark.parametrize(
    ("hub", "expected"),
    [
        ("http://127.0.0.1:8001", ["nac.E001", "nac.E002"]),  # the old default
        ("https://10.0.0.5", ["nac.E001"]),
        ("http://portal.localhost:8001", ["nac.E002"]),  # same host, another port
        ("https://PORTAL.example.pk:8443", ["nac.E002"]),
    ],
)
def test_a_hub_sharing_the_portals_host_or_an_address_is_an_error(settings, hub, expected):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["portal.localhost", "portal.example.pk", "127.0.0.1"]
    settings.HUB_PUBLIC_URL = hub
    messages = hub_on_its_own_host()
    assert [m.id for m in messages] == expected
    assert all(m.is_serious() for m in messages)


def test_under_debug_the_same_layout_only_warns_so_migrate_still_runs(settings):
    settings.DEBUG = True
    settings.HUB_PUBLIC_URL = "http://127.0.0.1:8001"
    messages = hub_on_its_own_host()
    assert messages
    assert not any(m.is_serious() for m in messages)


@pytest.mark.django_db
def test_hub_configure_moves_the_old_shared_host_defaults_to_their_own_hosts(
    tmp_path, settings, monkeypatch
):
    # given a development file written before the portal and the hub had hosts of their own
    for key in HUB_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    settings.HUB_ENV_FILE = tmp_path / "hub.env"
    settings.HUB_ENV_FILE.write_text(
        "HUB_PUBLIC_URL=http://127.0.0.1:8001\n"
        "HUB_API_URL=http://127.0.0.1:8001/hub/api\n"
        "PORTAL_PUBLIC_URL=http://127.0.0.1:8000\n"
        "HUB_API_TOKEN=" + "a" * 64 + "\n"
    )
    # when hub_configure runs (make run does, before starting the hub)
    out = StringIO()
    call_command("hub_configure", stdout=out)
    # then the shared-host values are replaced, and what was chosen on purpose is kept
    values = _env_values(settings.HUB_ENV_FILE)
    assert values["HUB_PUBLIC_URL"] == "http://hub.localhost:8001"
    assert values["HUB_API_URL"] == "http://hub.localhost:8001/hub/api"
    assert values["PORTAL_PUBLIC_URL"] == settings.SITE_URL == "http://portal.localhost:8000"
    assert values["HUB_API_TOKEN"] == "a" * 64
    assert "HUB_PUBLIC_URL: http://127.0.0.1:8001 -> http://hub.localhost:8001" in out.getvalue()


@pytest.mark.django_db
def test_hub_configure_keeps_a_hub_url_that_was_chosen(tmp_path, settings, monkeypatch):
    for key in HUB_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    settings.HUB_ENV_FILE = tmp_path / "hub.env"
    settings.HUB_ENV_FILE.write_text("HUB_PUBLIC_URL=https://notebooks.example.pk\n")
    call_command("hub_configure", stdout=StringIO())
    assert _env_values(settings.HUB_ENV_FILE)["HUB_PUBLIC_URL"] == "https://notebooks.example.pk"


def test_production_cookies_carry_the_host_prefix():
    code = (
        "from django.conf import settings as s;"
        "print(s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_NAME, s.SESSION_COOKIE_SECURE,"
        " s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_DOMAIN, s.CSRF_COOKIE_DOMAIN,"
        " s.SESSION_COOKIE_PATH, s.CSRF_COOKIE_PATH)"
    )
    env = {
        "SECRET_KEY": "k" * 50,
        "ALLOWED_HOSTS": "portal.example.pk",
        "API_KEY_PEPPER": "p" * 40,
        "MFA_ENCRYPTION_KEY": "m" * 40,
        "OIDC_RSA_PRIVATE_KEY": JWK.generate(kty="RSA", size=2048)
        .export_to_pem(private_key=True, password=None)
        .decode(),
        "DJANGO_SETTINGS_MODULE": "portal.settings.production",
    }
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "import django; django.setup(); " + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # __Host- cookies: Secure, no Domain, path / (browsers refuse them otherwise)
    assert result.stdout.split() == [
        "__Host-sessionid",
        "__Host-csrftoken",
        "True",
        "True",
        "None",
        "None",
        "/",
        "/",
    ]
