"""Where a person's notebook servers answer: on a host of their own below the hub's.

The hub runs with `subdomain_host` (sandboxes/spawner/jupyterhub_config.py), so every user's
servers are at <subdomain>.<hub host>, the subdomain made by JupyterHub's own hook from the hub
username. The portal builds the same address with the same function, so its links and the API's
`server_url` are exactly where the proxy routes.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from django.conf import settings
from jupyterhub.utils import subdomain_hook_idna


def user_origin(hub_username: str) -> str:
    """scheme://<subdomain>.<hub host>[:port] of this person's servers."""
    hub = urlsplit(settings.HUB_PUBLIC_URL)
    host = subdomain_hook_idna(hub_username, hub.hostname, "user")
    return f"{hub.scheme}://{host}" + (f":{hub.port}" if hub.port else "")


def server_url(hub_username: str, server_name: str) -> str:
    """The named server's base URL (JupyterHub's /user/<name>/<server>/ on the user's host)."""
    user, server = quote(hub_username, safe=""), quote(server_name, safe="")
    return f"{user_origin(hub_username)}/user/{user}/{server}/"
