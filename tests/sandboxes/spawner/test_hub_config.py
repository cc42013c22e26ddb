"""The hub's configuration keeps the trust domains apart: read exactly as JupyterHub reads it
(traitlets' loader over sandboxes/spawner/jupyterhub_config.py), with the settings make run uses.
Removing subdomain_host, or pointing the hub at the portal's host, fails here."""

from __future__ import annotations

import pytest
from traitlets.config.loader import PyFileConfigLoader

from tests.sandboxes.hub import CONFIG

REQUIRED = {
    "HUB_API_TOKEN": "0" * 64,
    "HUB_SPAWN_SECRET": "s" * 32,
    "HUB_OIDC_CLIENT_ID": "hub",
    "HUB_OIDC_CLIENT_SECRET": "c" * 32,
    "JUPYTERHUB_CRYPT_KEY": "k" * 64,
}


def load(monkeypatch, tmp_path, **env):
    for key in ("HUB_PUBLIC_URL", "PORTAL_PUBLIC_URL", "HUB_BIND_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**REQUIRED, "HUB_DATA_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(key, value)
    loader = PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent))
    return loader.load_config()


def test_every_users_servers_have_an_origin_of_their_own(monkeypatch, tmp_path):
    c = load(monkeypatch, tmp_path)
    assert c.JupyterHub.public_url == "http://hub.localhost:8001/"
    # users' servers on <user>.hub.localhost, routed by host: no two users share an origin
    assert c.JupyterHub.subdomain_host == "http://hub.localhost:8001"
    # a config file in a person's home does not run when their server starts
    assert c.PortalSpawner.disable_user_config is True
    # __Host- cookies need TLS; over plain http the browser would drop them
    assert c.JupyterHub.cookie_host_prefix_enabled is False
    # the hub sends people to the portal on the portal's own host
    assert c.GenericOAuthenticator.authorize_url == "http://portal.localhost:8000/o/authorize/"


def test_behind_tls_the_hubs_cookies_carry_the_host_prefix(monkeypatch, tmp_path):
    c = load(
        monkeypatch,
        tmp_path,
        HUB_PUBLIC_URL="https://notebooks.example.pk",
        PORTAL_PUBLIC_URL="https://portal.example.pk",
    )
    assert c.JupyterHub.subdomain_host == "https://notebooks.example.pk"
    assert c.JupyterHub.cookie_host_prefix_enabled is True


@pytest.mark.parametrize(
    ("hub", "portal", "says"),
    [
        ("http://127.0.0.1:8001", "http://127.0.0.1:8000", "must use a host name"),
        ("http://[::1]:8001", "http://portal.localhost:8000", "must use a host name"),
        ("http://10.0.0.5", "https://portal.example.pk", "must use a host name"),
        ("http://portal.localhost:8001", "http://portal.localhost:8000", "different hosts"),
    ],
)
def test_a_hub_on_an_address_or_on_the_portals_host_refuses_to_start(
    monkeypatch, tmp_path, hub, portal, says
):
    with pytest.raises(SystemExit) as stopped:
        load(monkeypatch, tmp_path, HUB_PUBLIC_URL=hub, PORTAL_PUBLIC_URL=portal)
    assert says in str(stopped.value.code)


def test_a_hub_login_is_rechecked_with_the_portal_and_needs_the_crypt_key(monkeypatch, tmp_path):
    # the portal's tokens are kept (encrypted) and re-checked once a login is this old: a portal
    # sign-out revokes them, which ends the hub login
    c = load(monkeypatch, tmp_path, HUB_AUTH_REFRESH_AGE="120")
    assert c.GenericOAuthenticator.enable_auth_state is True
    assert c.GenericOAuthenticator.auth_refresh_age == 120
    monkeypatch.delenv("HUB_AUTH_REFRESH_AGE")
    assert load(monkeypatch, tmp_path).GenericOAuthenticator.auth_refresh_age == 300
    # without the key there would be no auth state to re-check: the hub refuses to start
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY")
    loader = PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent))
    with pytest.raises(SystemExit, match="JUPYTERHUB_CRYPT_KEY"):
        loader.load_config()
