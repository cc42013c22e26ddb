"""System checks for the deployment's trust domains (run by `manage.py check` and at start).

The portal and the hub must be two hosts: browsers send a host's cookies to every port of it,
so a hub (or a notebook server its user controls) on the portal's host name would receive the
portal's session cookie. The hub's host must be a name, not an address, because every user's
servers live on <hub username>.<hub host> (JupyterHub's subdomain_host), which an IP address
cannot have.

Errors in production; warnings under DEBUG, so that `manage.py migrate` still runs on a
development machine whose var/hub.env predates this (`manage.py hub_configure`, the next step of
`make run`, moves the old 127.0.0.1 defaults to the new names).
"""

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.http.request import validate_host


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@checks.register(checks.Tags.security)
def hub_on_its_own_host(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    level = checks.Warning if settings.DEBUG else checks.Error
    hub = _host(settings.HUB_PUBLIC_URL)
    errors = []
    try:
        ipaddress.ip_address(hub)
    except ValueError:
        pass
    else:
        errors.append(
            level(
                f"HUB_PUBLIC_URL's host {hub!r} is an IP address: every user's notebook servers "
                "need their own origin, <user>.<hub host>, which only a host name can give.",
                hint="Serve the hub on a name of its own, e.g. http://hub.localhost:8001 in "
                "development, https://hub.<your domain> with wildcard DNS in production.",
                id="nac.E001",
            )
        )
    portal_hosts = {_host(settings.SITE_URL)}
    if hub and (hub in portal_hosts or validate_host(hub, settings.ALLOWED_HOSTS)):
        errors.append(
            level(
                f"The hub ({settings.HUB_PUBLIC_URL}) is on a host the portal serves: browsers "
                "send the portal's cookies to every port of a host, so a notebook server would "
                "receive the portal's session.",
                hint="Give the hub a host name of its own, outside ALLOWED_HOSTS and SITE_URL.",
                id="nac.E002",
            )
        )
    return errors
