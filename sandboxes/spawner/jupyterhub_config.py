# JupyterHub configuration of the portal's hub. Everything comes from the environment (the names
# the portal uses too; see the README's environment table and /tmp/plan/contract.md):
#
#   HUB_PUBLIC_URL            browser-facing URL of the proxy (default http://hub.localhost:8001);
#                             a host name of its own: each user's servers are on <user>.<host>
#   HUB_BIND_URL              where the proxy listens (default: 127.0.0.1 and HUB_PUBLIC_URL's port)
#   HUB_PROXY_API_PORT        the proxy's REST API, on 127.0.0.1 (default 8002)
#   HUB_INTERNAL_PORT         the hub process (default 8081), on the gateway of $SANDBOX_NETWORK
#   HUB_DATA_DIR              sqlite db, cookie secret, proxy token and pid (default var/hub)
#   HUB_API_TOKEN             token of the service "portal"                       (required)
#   HUB_SPAWN_SECRET          bearer the spawner sends to the portal             (required)
#   PORTAL_INTERNAL_URL       hub -> portal: internal API, OIDC token/userinfo (default :8000)
#   PORTAL_PUBLIC_URL         browser -> portal: OIDC authorize, logout
#                             (default http://portal.localhost:8000)
#   HUB_OIDC_CLIENT_ID, HUB_OIDC_CLIENT_SECRET   the hub's OIDC client at the portal (required)
#   JUPYTERHUB_CRYPT_KEY      encrypts the auth state (the portal's tokens)          (required)
#   HUB_AUTH_REFRESH_AGE      seconds a hub login is trusted before the portal is asked again
#                             (default 300): a portal sign-out ends the hub login within it
#   CONFIGPROXY_AUTH_TOKEN    optional; else generated once into HUB_DATA_DIR
#   SANDBOX_NETWORK, SANDBOX_NETWORK_INTERNAL    docker networks (see network.py)
#   HUB_IDLE_TIMEOUT          idle culler timeout in seconds (default 3600)
#   HUB_MAX_AGE               culler's hard cap on a server's age in seconds (default 0: off)
#   SANDBOX_MAX_LIVE_PER_USER named servers a hub user may have (default 3, as the portal)
#
# Start it with sandboxes/spawner/run-hub.sh (networks, db upgrade, cwd = HUB_DATA_DIR).
# ruff: noqa: F821  (`c` is provided by traitlets when it loads this file)

import ipaddress
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sandboxes.spawner.network import hub_ip  # noqa: E402


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def required(name: str) -> str:
    value = env(name)
    if not value:
        sys.exit(f"jupyterhub_config: {name} is not set (for development: manage.py hub_configure)")
    return value


hub_public_url = env("HUB_PUBLIC_URL", "http://hub.localhost:8001").rstrip("/")
portal_internal_url = env("PORTAL_INTERNAL_URL", "http://127.0.0.1:8000").rstrip("/")
portal_public_url = env("PORTAL_PUBLIC_URL", "http://portal.localhost:8000").rstrip("/")
data_dir = Path(env("HUB_DATA_DIR", str(REPO / "var" / "hub"))).resolve()
data_dir.mkdir(parents=True, exist_ok=True)
hub_port = int(env("HUB_INTERNAL_PORT", "8081"))
proxy_api_port = int(env("HUB_PROXY_API_PORT", "8002"))
idle_timeout = int(env("HUB_IDLE_TIMEOUT", "3600"))
max_age = int(env("HUB_MAX_AGE", "0"))

# --- proxy (configurable-http-proxy, started by the hub) ---------------------------------------

public = urlsplit(hub_public_url)
c.JupyterHub.public_url = hub_public_url + "/"

# --- trust domains -----------------------------------------------------------------------------
# A notebook user controls everything that answers on their server's address. So every user's
# servers get an origin of their own, <hub username>.<hub host> (the proxy routes by host): a
# page one user serves cannot script another user's notebooks or the hub, and receives none of
# their host-only cookies. The hub is on a host apart from the portal's (browsers send a host's
# cookies to every port of it), which is why the hub's host must be a name, not an address.
if not public.hostname or is_address(public.hostname):
    sys.exit(
        f"jupyterhub_config: HUB_PUBLIC_URL={hub_public_url!r} must use a host name (each user's "
        "servers live on <user>.<that name>), e.g. http://hub.localhost:8001"
    )
if public.hostname == urlsplit(portal_public_url).hostname:
    sys.exit(
        f"jupyterhub_config: the hub ({hub_public_url}) and the portal ({portal_public_url}) "
        "must be on different hosts: browsers send a host's cookies to every port of it"
    )
c.JupyterHub.subdomain_host = hub_public_url
# Behind TLS the hub's own cookies are __Host- cookies: no notebook server on a subdomain can
# plant a look-alike for the hub (cookie tossing). Browsers accept the prefix on https only.
c.JupyterHub.cookie_host_prefix_enabled = public.scheme == "https"
c.JupyterHub.bind_url = env(
    "HUB_BIND_URL",
    f"http://127.0.0.1:{public.port or (443 if public.scheme == 'https' else 80)}/",
)
c.ConfigurableHTTPProxy.should_start = True
# The pinned proxy (exact versions and integrity hashes in proxy/package-lock.json, installed by
# .ci/system-deps.sh with `npm ci`), never whichever configurable-http-proxy is first on PATH.
proxy_command = Path(__file__).resolve().parent / "proxy/node_modules/.bin/configurable-http-proxy"
if not proxy_command.exists():
    sys.exit(f"jupyterhub_config: {proxy_command} is missing (install it: .ci/system-deps.sh run)")
c.ConfigurableHTTPProxy.command = [str(proxy_command)]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")


def proxy_auth_token() -> str:
    token = env("CONFIGPROXY_AUTH_TOKEN")
    if token:
        return token
    path = data_dir / "proxy-auth-token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


c.ConfigurableHTTPProxy.auth_token = proxy_auth_token()

# --- the hub process ---------------------------------------------------------------------------

# The hub listens on the gateway of the open sandbox network (172.30.0.1): the proxy on the host
# and containers on both sandbox networks reach it there, and the host firewall (network.py)
# lets containers reach nothing else on the host. It is not on any public interface.
c.JupyterHub.hub_ip = hub_ip()
c.JupyterHub.hub_port = hub_port
c.JupyterHub.hub_connect_url = f"http://{hub_ip()}:{hub_port}"
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")
# Restarting the hub must not stop running sandboxes (GPU jobs, paid by the second).
c.JupyterHub.cleanup_servers = False
c.JupyterHub.allow_named_servers = True
# The portal's own cap on live sandboxes (same variable); a second wall. Stopped named servers
# count too until deleted, so the portal removes a server when it stops or fails.
c.JupyterHub.named_server_limit_per_user = int(env("SANDBOX_MAX_LIVE_PER_USER", "3"))
# POST .../servers/<name> answers 202 at once; the portal follows the progress stream.
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
# Only named servers (sb-...) exist: land on the hub's home page, which lists them, and never
# start or redirect to a default server after login.
c.JupyterHub.default_url = "/hub/home"
c.JupyterHub.redirect_to_server = False
c.JupyterHub.implicit_spawn_seconds = 0
# Prometheus metrics at /hub/metrics only for a token that holds read:metrics (none by default).
c.JupyterHub.authenticate_prometheus = True

# --- spawner -----------------------------------------------------------------------------------

c.JupyterHub.spawner_class = "sandboxes.spawner.spawner.PortalSpawner"
c.PortalSpawner.portal_internal_url = portal_internal_url
c.PortalSpawner.spawn_secret = required("HUB_SPAWN_SECRET")
c.PortalSpawner.open_network = env("SANDBOX_NETWORK", "nac-sandboxes")
c.PortalSpawner.internal_network = env("SANDBOX_NETWORK_INTERNAL", "nac-sandboxes-internal")
c.PortalSpawner.start_timeout = 120
c.PortalSpawner.http_timeout = 60
c.PortalSpawner.cmd = ["jupyterhub-singleuser"]
c.PortalSpawner.default_url = "/lab"
c.PortalSpawner.notebook_dir = "/home/jovyan"
c.PortalSpawner.debug = False
# Configuration in the person's home (~/.jupyter, and extensions and kernels under ~/.local)
# is ignored when their server starts: a file planted there cannot change how the server runs.
# The image's own configuration (/opt/venv/etc/jupyter) belongs to root.
c.PortalSpawner.disable_user_config = True

# --- login: the portal is the OpenID Connect provider ------------------------------------------

c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.client_id = required("HUB_OIDC_CLIENT_ID")
c.GenericOAuthenticator.client_secret = required("HUB_OIDC_CLIENT_SECRET")
c.GenericOAuthenticator.oauth_callback_url = f"{hub_public_url}/hub/oauth_callback"
c.GenericOAuthenticator.authorize_url = f"{portal_public_url}/o/authorize/"
c.GenericOAuthenticator.token_url = f"{portal_internal_url}/o/token/"
c.GenericOAuthenticator.userdata_url = f"{portal_internal_url}/o/userinfo/"
c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.login_service = "the AI cloud portal"
c.GenericOAuthenticator.enable_pkce = True
c.GenericOAuthenticator.auto_login = True
c.GenericOAuthenticator.logout_redirect_url = f"{portal_public_url}/"
# Who may log in: only hub users that already exist. The portal creates a hub user (through the
# API, as the service "portal") when it first launches a sandbox for that person, so a portal
# identity without a sandbox gets nothing here; allow_all would admit every portal account.
c.GenericOAuthenticator.allow_all = False
c.GenericOAuthenticator.allow_existing_users = True
c.GenericOAuthenticator.admin_users = set()
# The hub keeps the portal's tokens of each login (encrypted) and re-asks the portal's userinfo
# with them once a login is HUB_AUTH_REFRESH_AGE old. Signing out of the portal (or suspension,
# or removal) revokes those tokens, so the hub's own login cookie stops working within that age
# even while a sandbox runs: JupyterHub offers no other way to void it short of deleting the user.
required("JUPYTERHUB_CRYPT_KEY")  # JupyterHub's CryptKeeper reads it from the environment
c.GenericOAuthenticator.enable_auth_state = True
c.GenericOAuthenticator.auth_refresh_age = int(env("HUB_AUTH_REFRESH_AGE", "300"))
c.GenericOAuthenticator.refresh_pre_spawn = False

# --- roles and services ------------------------------------------------------------------------

c.JupyterHub.services = [
    {"name": "portal", "api_token": required("HUB_API_TOKEN")},
]
cull_command = [
    sys.executable,
    "-m",
    "jupyterhub_idle_culler",
    f"--timeout={idle_timeout}",
    # check often enough that the timeout is honoured to within ~1/6 (at most every 5 minutes)
    f"--cull-every={max(30, min(300, idle_timeout // 6))}",
    "--concurrency=5",
    "--remove-named-servers=True",
]
if max_age > 0:
    cull_command.append(f"--max-age={max_age}")
c.JupyterHub.services.append({"name": "idle-culler", "command": cull_command})

c.JupyterHub.load_roles = [
    {
        # Ordinary hub users use their running sandbox and see the hub's pages, but can NOT start
        # (or create, or re-spec) servers: only the portal starts them. The default role's `self`
        # would grant servers!user and start:servers!user. They may stop their own server; the
        # spawner tells the portal, which ends billing.
        "name": "user",
        "description": "Use your own running sandboxes; starting them is the portal's job",
        "scopes": [
            "access:servers!user",
            "read:users!user",
            "read:servers!user",
            "delete:servers!user",
            # A server's own token is bounded by its owner's scopes: without this the running
            # notebook cannot report activity, and the idle culler would see it as idle.
            "users:activity!user",
        ],
    },
    {
        "name": "portal-driver",
        "description": "The portal: create hub users, start/stop/read their servers, mint "
        "short-lived server-access tokens for them",
        # Only what sandboxes/launcher/hub_client.py calls. JupyterHub 6 has no narrower scope
        # that creates a user than admin:users (it carries users, delete:users and
        # admin:auth_state); nothing here reaches users' servers (access:servers), the proxy,
        # the hub's own state, shutdown or metrics. test_hub.py checks the token's scopes.
        "scopes": [
            "admin:users",  # POST /users/{name}, DELETE /users/{name}, GET /users?state=active
            "read:servers",  # GET .../servers/{name}, .../progress
            "start:servers",  # POST .../servers/{name}
            "delete:servers",  # DELETE .../servers/{name}
            "tokens",  # GET, POST, DELETE /users/{name}/tokens (bounded by that user's scopes)
        ],
        "services": ["portal"],
    },
    {
        "name": "idle-culler",
        "description": "Stop servers idle longer than HUB_IDLE_TIMEOUT (or older than HUB_MAX_AGE)",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
]
