"""Test settings: real PostgreSQL when DATABASE_URL says so (CI), real Redis, fast hashing."""

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .base import *  # noqa: F403
from .base import CACHES, CHANNEL_LAYERS, DATABASES, OAUTH2_PROVIDER, env

SECRET_KEY = "test-secret-key-not-for-production-use-0123456789abcdefghijklmnop"  # noqa: S105
DEBUG = False
WHITENOISE_USE_FINDERS = True  # the browser tests load the real assets from static/
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; never in production
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True

# A database of Redis of its own, so a test run never touches the development data.
REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
CACHES["default"]["LOCATION"] = REDIS_URL
# A prefix per test process: concurrent runs on one machine (xdist, two checkouts) never share
# rate-limit counters, and each clears only its own keys.
CACHES["default"]["KEY_PREFIX"] = f"portal-test-{os.getpid()}"
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = REDIS_URL
CELERY_BROKER_URL = REDIS_URL
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
API_KEY_PEPPER = "test-pepper-not-for-production"  # noqa: S105
MFA_ENCRYPTION_KEY = "test-mfa-key-not-for-production"  # noqa: S105
SANDBOX_GPU_BACKEND = "simulated:2xH100-80GB"
HUB_CLIENT_RETRIES = 0
# Nothing listens there: the tests that need a hub start a real one, and pass its address to
# the Celery worker they start through these variables.
HUB_API_URL = env.str("HUB_API_URL", default="http://127.0.0.1:1/hub/api")
# The ledger's concurrency tests hold up to 50 connections at once from threads of one process,
# where a server's process has 16 threads: the pool stays on (its path is the one tested) but is
# not what they queue on.
_pool = DATABASES["default"].get("OPTIONS", {}).get("pool")
if _pool and "DATABASE_POOL_MAX_SIZE" not in os.environ:
    _pool["max_size"] = 64


def _test_oidc_key() -> str:
    """A fresh RSA key per test process, in memory only: tests read the JWKS, never a fixed key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"] = _test_oidc_key()
OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"] = ["http", "https"]
HUB_SPAWN_SECRET = env.str("HUB_SPAWN_SECRET", default="test-spawn-secret-0123456789abcdef")
HUB_API_TOKEN = env.str("HUB_API_TOKEN", default="0" * 64)
