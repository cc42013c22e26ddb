"""Production settings: every secret comes from the environment, HTTPS everywhere.

`manage.py check --deploy --settings=portal.settings.production` passes with zero warnings.
"""

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import OAUTH2_PROVIDER, env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")  # required: no default on purpose
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# `__Host-` cookies are Secure, for this exact host, on path /, and can carry no Domain: a page on
# a sibling host (a notebook server on *.hub...) can neither read them nor plant ("toss") a
# look-alike that the portal would accept in their place.
SESSION_COOKIE_NAME = "__Host-sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken"
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https"
DEMO_SEED_ALLOWED = False
API_KEY_PEPPER = env.str("API_KEY_PEPPER")  # required: a secret apart from SECRET_KEY
MFA_ENCRYPTION_KEY = env.str("MFA_ENCRYPTION_KEY")  # required: encrypts TOTP secrets


# Required: the RSA key that signs the hub's ID tokens (PEM, unencrypted; "\n" escapes allowed).
# Checked here, so a wrong value stops the deployment rather than the first sign-in.
OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"] = env.str("OIDC_RSA_PRIVATE_KEY", multiline=True)
try:
    load_pem_private_key(OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"].encode(), password=None)
except (ValueError, TypeError) as error:  # not PEM, or encrypted
    raise ImproperlyConfigured(f"OIDC_RSA_PRIVATE_KEY is not a PEM private key: {error}") from None
OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"] = ["https"]
