"""Register JupyterHub as the portal's OIDC client and write the hub's settings to var/hub.env.

`manage.py hub_configure` is idempotent: a value already in the file (or in the environment,
which wins) is kept, so re-running it, or restarting, signs nobody out and invalidates no
token. Missing secrets are generated. `--print` prints only the file's path, for scripts:
`honcho -e "$(manage.py hub_configure --print)" ...`.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from oauth2_provider.generators import generate_client_id, generate_client_secret

from portal.users.oidc import hub_client_ensure, hub_client_redirect_uri

# Every variable the hub and the portal share (the sandboxes contract), in file order, with how
# to make it when neither the environment nor the existing file has one.
HUB_ENV_DEFAULTS = {
    "HUB_PUBLIC_URL": lambda: "http://hub.localhost:8001",
    "HUB_API_URL": lambda: "http://hub.localhost:8001/hub/api",
    "HUB_API_TOKEN": lambda: secrets.token_hex(32),  # JupyterHub accepts at most 64 characters
    "HUB_SPAWN_SECRET": lambda: secrets.token_hex(32),
    "PORTAL_INTERNAL_URL": lambda: "http://127.0.0.1:8000",
    "PORTAL_PUBLIC_URL": lambda: settings.SITE_URL,
    "HUB_OIDC_CLIENT_ID": generate_client_id,
    "HUB_OIDC_CLIENT_SECRET": generate_client_secret,
    "JUPYTERHUB_CRYPT_KEY": lambda: secrets.token_hex(32),
    "HUB_DATA_DIR": lambda: "var/hub",
    "HUB_PROXY_API_PORT": lambda: "8002",
    "HUB_INTERNAL_PORT": lambda: "8081",
    "SANDBOX_NETWORK": lambda: "nac-sandboxes",
    "SANDBOX_NETWORK_INTERNAL": lambda: "nac-sandboxes-internal",
    "HUB_IDLE_TIMEOUT": lambda: "3600",
    "HUB_MAX_AGE": lambda: "0",
}

# Earlier defaults put the hub on the portal's host (127.0.0.1, another port), where it received
# the portal's cookies: a file that still holds one of these gets today's default instead.
SUPERSEDED_DEFAULTS = {
    "HUB_PUBLIC_URL": "http://127.0.0.1:8001",
    "HUB_API_URL": "http://127.0.0.1:8001/hub/api",
    "PORTAL_PUBLIC_URL": "http://127.0.0.1:8000",
}

HEADER = (
    "# JupyterHub <-> portal settings for development, written by `manage.py hub_configure`.\n"
    "# Secrets: keep this file private (0600) and out of version control. Values here are kept\n"
    "# when the command runs again; delete a line to have it generated afresh.\n"
)


def env_file_read(path: Path) -> dict[str, str]:
    """KEY=value lines; blank lines and # comments are ignored."""
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def var_dir_secure(folder: Path) -> None:
    """var/ holds this file, the development keys and the hub's database and cookie secret: its
    owner only (0700), created so or tightened when an earlier step left it open."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)


def env_file_write(path: Path, values: dict[str, str]) -> None:
    """Replace the file in one step, readable by its owner only."""
    text = HEADER + "".join(f"{key}={value}\n" for key, value in values.items())
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


class Command(BaseCommand):
    help = (
        "Create or update the JupyterHub OIDC client and write the hub's settings to var/hub.env "
        "(idempotent: existing values are kept)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--print",
            action="store_true",
            dest="print_path",
            help="Print only the path of the settings file (after making sure it is current).",
        )

    def handle(self, *args, print_path: bool, **options):
        path = Path(settings.HUB_ENV_FILE)
        var_dir_secure(Path(settings.VAR_DIR))
        # Another folder (HUB_ENV_FILE elsewhere) is made owner-only when missing, else left alone.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = env_file_read(path)
        superseded = {key for key, old in SUPERSEDED_DEFAULTS.items() if existing.get(key) == old}
        existing_kept = {k: v for k, v in existing.items() if k not in superseded}
        values = {
            key: os.environ.get(key) or existing_kept.get(key) or make()
            for key, make in HUB_ENV_DEFAULTS.items()
        }
        values.update({k: v for k, v in existing.items() if k not in values})  # keep extras
        for key in sorted(superseded):
            self.stdout.write(f"{key}: {existing[key]} -> {values[key]} (a host of its own)")
        values["HUB_PUBLIC_URL"] = values["HUB_PUBLIC_URL"].rstrip("/")
        values["HUB_API_URL"] = values["HUB_API_URL"].rstrip("/")
        if len(values["HUB_API_TOKEN"]) > 64:
            raise CommandError("HUB_API_TOKEN is longer than the 64 characters JupyterHub allows.")

        try:
            application, client_changed = hub_client_ensure(
                client_id=values["HUB_OIDC_CLIENT_ID"],
                client_secret=values["HUB_OIDC_CLIENT_SECRET"],
                hub_public_url=values["HUB_PUBLIC_URL"],
            )
        except ValidationError as error:
            raise CommandError(f"The hub's OIDC client is not valid: {error}") from error

        file_changed = not path.exists() or values != existing or bool(path.stat().st_mode & 0o077)
        if file_changed:
            env_file_write(path, values)

        if print_path:
            self.stdout.write(str(path))
            return
        self.stdout.write(
            f"{path}: {'written' if file_changed else 'unchanged'}. "
            f"OIDC client {application.client_id!r}: "
            f"{'saved' if client_changed else 'unchanged'}; redirect URI "
            f"{hub_client_redirect_uri(hub_public_url=values['HUB_PUBLIC_URL'])}"
        )
