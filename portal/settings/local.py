"""Development settings: `make run` on a laptop or a fresh Debian machine."""

import secrets

from .base import *  # noqa: F403
from .base import VAR_DIR, env

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
