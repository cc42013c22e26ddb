"""Settings that must hold: production refuses to start half-configured, SQLite is shareable,
and no page can load anything from another host."""

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.urls import reverse
from jwcrypto.jwk import JWK

ROOT = Path(settings.BASE_DIR)


def _django(settings_module: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    removed = {"SECRET_KEY", "ALLOWED_HOSTS", "API_KEY_PEPPER", "MFA_ENCRYPTION_KEY"}
    clean = {k: v for k, v in os.environ.items() if k not in removed}
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", *args, f"--settings={settings_module}"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _django("portal.settings.production", {"ALLOWED_HOSTS": "portal.example.pk"}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_an_api_key_pepper():
    env = {"SECRET_KEY": "s" * 60, "ALLOWED_HOSTS": "portal.example.pk"}
    result = _django("portal.settings.production", env, "check")
    assert result.returncode != 0
    assert "API_KEY_PEPPER" in result.stderr


def test_production_refuses_to_start_without_an_mfa_encryption_key():
    env = {"SECRET_KEY": "s" * 60, "ALLOWED_HOSTS": "portal.example.pk", "API_KEY_PEPPER": "p" * 40}
    result = _django("portal.settings.production", env, "check")
    assert result.returncode != 0
    assert "MFA_ENCRYPTION_KEY" in result.stderr


def test_production_passes_the_deploy_checklist_with_zero_warnings():
    env = {
        "SECRET_KEY": "k" * 20 + "-unique-Value-0123456789-abcdefghijklmnop",
        "ALLOWED_HOSTS": "a.pk",
        "API_KEY_PEPPER": "another-long-random-secret",
        "MFA_ENCRYPTION_KEY": "a-third-long-random-secret",
        "OIDC_RSA_PRIVATE_KEY": JWK.generate(kty="RSA", size=2048)
        .export_to_pem(private_key=True, password=None)
        .decode(),
    }
    result = _django(
        "portal.settings.production", env, "check", "--deploy", "--fail-level", "WARNING"
    )
    assert result.returncode == 0, result.stderr
    assert "no issues (0 silenced)" in result.stdout


def test_the_sqlite_file_database_really_uses_wal(tmp_path):
    db = tmp_path / "portal.sqlite3"
    code = (
        "import django; django.setup();"
        "from django.db import connection;"
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0]);"
        "c.execute('PRAGMA busy_timeout'); print(c.fetchone()[0])"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings.local",
            "DATABASE_URL": f"sqlite:///{db}",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    mode, busy_ms = result.stdout.split()
    assert mode == "wal"
    assert int(busy_ms) >= 5000


@pytest.mark.django_db
def test_pages_carry_a_same_origin_content_security_policy(client):
    response = client.get(reverse("account_signup"))
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    # The one other origin ever named is the deployment's own hub, and only as a place forms
    # (the sign-in that continues to the hub) may lead: no code, style, font or image elsewhere.
    hub = "{0.scheme}://{0.netloc}".format(urlsplit(settings.HUB_PUBLIC_URL))
    assert directives.pop("form-action") == f"'self' {hub}"
    assert not [d for d in directives.values() if "http" in d]  # no other host is ever allowed


def _asset_references(text: str) -> list[str]:
    return re.findall(
        r"""(?:src|href|action)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""", text
    )


def test_no_template_or_stylesheet_points_at_another_host():
    offenders = []
    for path in [*ROOT.glob("templates/**/*.html"), *ROOT.glob("static/css/**/*.css")]:
        for match in _asset_references(path.read_text()):
            url = next(part for part in match if part)
            if re.match(r"^(https?:)?//", url):
                offenders.append(f"{path.relative_to(ROOT)}: {url}")
    assert offenders == []


def test_vendored_scripts_make_no_requests_to_fixed_hosts():
    # htmx and uPlot are vendored; they must not carry a CDN or analytics host they would call
    # by themselves (a licence banner comment naming the project's home calls nothing)
    for path in ROOT.glob("static/vendor/**/*.js"):
        code = re.sub(r"/\*!.*?\*/", "", path.read_text(), flags=re.DOTALL)
        hosts = set(re.findall(r"https?://([a-z0-9.-]+\.[a-z]{2,})", code))
        assert hosts <= {"www.w3.org", "htmx.org"}, (path, hosts)
