"""Development settings: `make run` on a laptop or a fresh Debian machine."""

import os
import secrets
from pathlib import Path

import environ
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# The hub's development secrets (`manage.py hub_configure` writes them), read before base.py so
# every manage.py command and the web process see the same client id, tokens and URLs.
# Variables already in the environment win.
_HUB_ENV_FILE = Path(__file__).resolve().parent.parent.parent / "var" / "hub.env"
if _HUB_ENV_FILE.exists():
    environ.Env.read_env(_HUB_ENV_FILE, overwrite=False)

from .base import *  # noqa: E402, F403
from .base import (  # noqa: E402
    CELERY_BEAT_SCHEDULE,
    OAUTH2_PROVIDER,
    OIDC_DEVELOPMENT_KEY_PATH,
    VAR_DIR,
    env,
)

DEBUG = env.bool("DEBUG", default=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG


def _development_secret_key() -> str:
    """Generate the key once into var/, so sessions survive restarts but nothing is committed."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _development_secret_key()
API_KEY_PEPPER = env.str("API_KEY_PEPPER", default="") or f"dev-pepper:{SECRET_KEY}"
MFA_ENCRYPTION_KEY = env.str("MFA_ENCRYPTION_KEY", default="") or f"dev-mfa:{SECRET_KEY}"

# No NVIDIA driver on a laptop or a CI machine: four pretend H100s, labelled as such everywhere.
SANDBOX_GPU_BACKEND = env.str("SANDBOX_GPU_BACKEND", default="simulated:4xH100-80GB")

# The demo meters every 5 s, so the charts and the balance visibly move.
METERING_INTERVAL = env.int("METERING_INTERVAL", default=5)
CELERY_BEAT_SCHEDULE["metering-tick"].update(
    schedule=METERING_INTERVAL, options={"expires": METERING_INTERVAL}
)


def _development_oidc_key() -> str:
    """An RSA key for signing ID tokens, made once into var/ (0600) like the secret key."""
    path = OIDC_DEVELOPMENT_KEY_PATH
    if not path.exists():
        pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written aside, then linked into place: two processes starting at once both end up
        # with the first key, and nobody ever reads a half-written file.
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    return path.read_text()


if not OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"]:
    OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"] = _development_oidc_key()
if DEBUG:
    OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"] = ["http", "https"]  # the hub on 127.0.0.1
