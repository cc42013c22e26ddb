"""var/ and the hub's settings file are private to their owner (issue 13, §7).

`manage.py hub_configure` writes the hub's secrets (API token, OIDC client secret, crypt key)
into var/hub.env; var/ also holds the development signing keys and the hub's database. Another
local user must not be able to list or read any of it, whatever umask the command runs with.
"""

import os
import stat
from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The usual login umask (022): files 0644 and folders 0755 unless the code says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def var_dir(tmp_path, settings, monkeypatch, open_umask):
    for key in [k for k in os.environ if k.startswith(("HUB_", "JUPYTERHUB_", "PORTAL_"))]:
        monkeypatch.delenv(key)
    settings.VAR_DIR = tmp_path / "var"
    settings.HUB_ENV_FILE = settings.VAR_DIR / "hub.env"
    return settings.VAR_DIR


def test_hub_configure_creates_var_and_its_file_for_the_owner_only(var_dir):
    # given no var/ yet; when hub_configure runs under an open umask
    call_command("hub_configure", stdout=StringIO())

    # then var/ is 0700, hub.env 0600, and nothing else was left beside it
    assert mode(var_dir) == 0o700
    assert mode(var_dir / "hub.env") == 0o600
    assert sorted(p.name for p in var_dir.iterdir()) == ["hub.env"]


def test_hub_configure_closes_a_var_folder_left_open(var_dir):
    # given a var/ another step created with the default mode (Django's settings do: 0755)
    var_dir.mkdir(mode=0o755)
    var_dir.chmod(0o755)

    # when hub_configure runs
    call_command("hub_configure", stdout=StringIO())

    # then other users can no longer list or enter it
    assert mode(var_dir) == 0o700
    assert mode(var_dir / "hub.env") == 0o600


def test_a_settings_file_elsewhere_gets_a_private_new_folder(var_dir, settings, tmp_path):
    # given HUB_ENV_FILE in a folder that does not exist yet
    settings.HUB_ENV_FILE = tmp_path / "etc" / "nac" / "hub.env"

    # when hub_configure runs
    call_command("hub_configure", stdout=StringIO())

    # then that folder is made owner-only, as is the file
    assert mode(tmp_path / "etc" / "nac") == 0o700
    assert mode(settings.HUB_ENV_FILE) == 0o600
