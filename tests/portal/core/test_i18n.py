"""Urdu: the signup and onboarding pages read right to left, in Urdu, with a working switcher."""

import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

pytestmark = pytest.mark.django_db
CATALOGUE = Path(settings.BASE_DIR) / "portal/locale/ur/LC_MESSAGES/django.po"


def _in_urdu(client):
    client.post(reverse("language_set"), {"language": "ur", "next": "/"})


def test_the_switcher_sets_the_language_and_remembers_it_on_the_account(client, user):
    client.force_login(user)
    response = client.post(reverse("language_set"), {"language": "ur", "next": "/onboarding/"})
    assert response["Location"] == "/onboarding/"
    user.refresh_from_db()
    assert user.language == "ur"


def test_an_unknown_language_changes_nothing(client, user):
    client.force_login(user)
    client.post(reverse("language_set"), {"language": "xx", "next": "/"})
    client.post(reverse("language_set"), {"language": "de", "next": "/"})  # Django has it; we don't
    user.refresh_from_db()
    assert user.language == "en"


def test_an_offsite_next_is_not_followed(client):
    response = client.post(
        reverse("language_set"), {"language": "ur", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_signup_in_urdu_is_rtl_and_translated(client):
    _in_urdu(client)
    html = client.get(reverse("account_signup")).content.decode()
    assert '<html lang="ur" dir="rtl">' in html
    for urdu in ("پورا نام", "پاس ورڈ"):
        assert urdu in html
    assert "Full name" not in html


@pytest.mark.parametrize(
    "url_name", ["onboarding:start", "onboarding:startup", "onboarding:student"]
)
def test_onboarding_pages_in_urdu(client, user, url_name):
    client.force_login(user)
    _in_urdu(client)
    html = client.get(reverse(url_name)).content.decode()
    assert 'dir="rtl"' in html
    assert "Register a startup" not in html
    assert "Join as a student" not in html


def test_every_message_in_the_urdu_catalogue_is_translated():
    untranslated = subprocess.run(  # noqa: S603
        ["msgattrib", "--untranslated", "--no-obsolete", str(CATALOGUE)],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fuzzy = subprocess.run(  # noqa: S603
        ["msgattrib", "--only-fuzzy", str(CATALOGUE)],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # msgattrib prints only the header when nothing matches
    assert untranslated.count('msgid "') <= 1
    assert fuzzy.count('msgid "') == 0
