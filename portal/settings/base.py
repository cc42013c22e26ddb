"""Everything the portal needs, read from the environment (django-environ).

Environment-specific modules (local, production, test) change only what must differ.
Every variable read here is listed, with its default, in the README (a test checks it).
One module on purpose: every setting of the deployment in one place, by banner.
"""

from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")  # local.py generates one; production requires it
# The portal and the hub are two trust domains on two host names (cookies ignore ports): the
# development defaults are portal.localhost and hub.localhost, which browsers resolve to loopback.
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["portal.localhost", "127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://portal.localhost:8000").rstrip("/")
ADMIN_URL = env.str("ADMIN_URL", default="admin/")

INSTALLED_APPS = [
    "portal.users.admin_apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.usersessions",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_htmx",
    "oauth2_provider",  # the portal is the OpenID Connect provider JupyterHub signs in with
    "portal.core",
    "portal.users",
    "portal.audit",
    "portal.organisations",
    "portal.onboarding",
    "portal.dashboard",
    "portal.credits",
    "portal.apikeys",
    "sandboxes.gpus",
    "sandboxes.launcher",
    "sandboxes.metering",
    "inference.catalogue",
    "inference.deployments",
    "inference.usage",
    "inference.gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.users.middleware.SessionIdleTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.core.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.users.context_processors.portal",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite is the embedded default; WAL and a busy timeout let the web process and the Celery
# worker share the file. PostgreSQL (DATABASE_URL=postgres://...) is what CI and production run.
VAR_DIR.mkdir(mode=0o700, exist_ok=True)  # secrets live here (hub.env, keys)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
else:
    # Django's ASGI handler runs each request's sync code in a thread of its own, so a
    # persistent connection (CONN_MAX_AGE) is never reused and only piles up until PostgreSQL
    # refuses more clients. psycopg's pool, per process, is shared by those threads instead: a
    # request borrows a connection and gives it back when it ends (Django's request_finished,
    # sent for a cancelled request too), as a Celery task does when it ends. The pool needs
    # CONN_MAX_AGE 0. max_size bounds the connections one process holds: the worker's 16
    # threads (.procfile) need 16 to never wait; a request that finds none free within the
    # timeout fails (PoolTimeout) rather than queueing without end. DATABASE_POOL_MAX_SIZE=0
    # turns the pool off (one connection per request, as before). Behind PgBouncer in
    # transaction pooling, also set DATABASE_DISABLE_SERVER_SIDE_CURSORS (README, Connections).
    DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=16)
    if DATABASE_POOL_MAX_SIZE > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(env.int("DATABASE_POOL_MIN_SIZE", default=2), DATABASE_POOL_MAX_SIZE),
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": env.float("DATABASE_POOL_TIMEOUT_SECONDS", default=10.0),
        }
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DATABASE_DISABLE_SERVER_SIDE_CURSORS", default=False
    )
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, Celery broker, channel layer ----------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="portal"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
# Redis Pub/Sub: one PUBLISH per group message, and each server process queues what it receives
# for its own sockets without a cap. The list-based RedisChannelLayer keeps at most `capacity`
# (100) waiting messages per server process and drops the rest with an INFO log: measured by
# make bench, 1,000 sockets at one message a second lost half their messages that way. Pub/Sub
# delivers at most once, which suits snapshots (every message carries the whole state; a page
# re-reads after a reconnect). Reads may outlast redis-py 8's default 5 s socket timeout.
CHANNEL_LAYER_SOCKET_TIMEOUT_SECONDS = 30
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [
                {"address": REDIS_URL, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT_SECONDS}
            ],
            "prefix": env.str("CHANNELS_PREFIX", default="asgi"),
        },
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None  # tasks write their outcome to the database, not to a result store
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "Asia/Karachi"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# --- Authentication (django-allauth) ---------------------------------------------------------
AUTH_USER_MODEL = "users.User"
# Django's and allauth's, each loading a signed-in person with their programme-manager role in
# one query (portal.users.backends). A session signed in through the former paths is signed out.
AUTHENTICATION_BACKENDS = [
    "portal.users.backends.ModelBackend",
    "portal.users.backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "onboarding:start"

ACCOUNT_ADAPTER = "portal.users.adapters.AccountAdapter"
ACCOUNT_FORMS = {"signup": "portal.users.forms.SignupForm"}
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_CHANGE_EMAIL = True  # one address per user; a change is verified before it replaces the old
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[National AI Cloud] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = env.str("ACCOUNT_DEFAULT_HTTP_PROTOCOL", default="http")
ACCOUNT_EMAIL_CONFIRMATION_EXPIRE_DAYS = 3
ACCOUNT_REAUTHENTICATION_REQUIRED = True  # re-enter the password before changing e-mail or MFA
# allauth's defaults, written out so the numbers are visible and reviewable; they need a real cache.
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "confirm_email": "1/3m/key",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
    "manage_email": "10/m/user",
    "reauthenticate": "10/m/user",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_ADAPTER = "portal.users.adapters.MFAAdapter"  # TOTP secrets encrypted at rest
# The key for them, apart from SECRET_KEY; local.py derives one, production requires it.
MFA_ENCRYPTION_KEY = env.str("MFA_ENCRYPTION_KEY", default="")
MFA_TOTP_ISSUER = env.str("MFA_TOTP_ISSUER", default="National AI Cloud")
# The sessions page shows when and where each session was last seen. portal.users.middleware
# records it, at most once a minute, in place of allauth's middleware (a write per request).
USERSESSIONS_TRACK_ACTIVITY = True

SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 12)
# Rows in the database, read through the cache: a signed-in request reads no session row
# (portal.users.sessions says why Django's cached_db is not enough).
SESSION_ENGINE = "portal.users.sessions"
# A signed-in session ends after this long without a request (portal.users.middleware).
SESSION_IDLE_TIMEOUT_SECONDS = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=60 * 60 * 8)

# --- E-mail -------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="National AI Cloud <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ur", _("Urdu"))]
LOCALE_PATHS = [BASE_DIR / "portal" / "locale"]
TIME_ZONE = "Asia/Karachi"
USE_I18N = True
USE_TZ = True

# --- Static files (everything vendored; no CDN) ---------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG  # development serves straight from static/; production collects
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Security headers that hold in every environment ---------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
# Only this origin may serve code, styles, fonts or images: sovereignty, enforced by the browser.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; object-src 'none'"
)

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.apikeys.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # the browser, with CSRF
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.apikeys.permissions.HasScopes"],
    "DEFAULT_THROTTLE_CLASSES": ["portal.apikeys.throttling.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.core.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "National AI Cloud API",
    "DESCRIPTION": (
        "Authenticate with `Authorization: Bearer <key>` (create keys at /api-keys/) or with "
        'your browser session. Errors: `{"error": {"code", "message", "fields"}}`. '
        "Lists use cursor pages. POSTs that create something honour `Idempotency-Key`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.core.api.schema.add_error_responses",
    ],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}
API_KEY_PEPPER = env.str("API_KEY_PEPPER", default="")  # production requires it; see local.py
API_KEY_RATE_LIMIT = (
    env.int("API_KEY_RATE_LIMIT_REQUESTS", default=600),
    env.int("API_KEY_RATE_LIMIT_WINDOW_SECONDS", default=60),
)

# --- OpenID Connect provider: single sign-on into JupyterHub (django-oauth-toolkit) -------
# The hub is the one client (`manage.py hub_configure` registers it): confidential,
# authorization code with PKCE (S256), RS256-signed ID tokens, no consent screen. Every RFC 9700
# gate is on, so `check --deploy` is clean and the server refuses what the BCP discourages.
# local.py and test.py supply a key when OIDC_RSA_PRIVATE_KEY is empty; production requires it.
OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": env.str("OIDC_RSA_PRIVATE_KEY", default="", multiline=True),
    "OAUTH2_VALIDATOR_CLASS": "portal.users.oidc.PortalOIDCValidator",
    "SCOPES": {
        "openid": _("Sign you in"),
        "profile": _("Your name and hub username"),
        "email": _("Your e-mail address"),
    },
    "DEFAULT_SCOPES": ["openid"],
    "PKCE_REQUIRED": True,
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ACCESS_TOKEN_EXPIRE_SECONDS": 10 * 60,
    "ID_TOKEN_EXPIRE_SECONDS": 10 * 60,
    "REFRESH_TOKEN_EXPIRE_SECONDS": 12 * 60 * 60,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # https only; local.py (DEBUG) and test.py add http for the hub on 127.0.0.1.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,  # the hub's logout ends the portal session too
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}
OIDC_DEVELOPMENT_KEY_PATH = VAR_DIR / "oidc_rsa.pem"  # local.py only

# --- JupyterHub (the names are shared with the hub side; `hub_configure` writes var/hub.env) --
# The hub on a host of its own, and every user's notebook servers on <hub username>.<that host>
# (JupyterHub's subdomain_host): a server its owner controls is another origin from the hub's,
# the portal's and every other person's (see portal/core/checks.py).
HUB_PUBLIC_URL = env.str("HUB_PUBLIC_URL", default="http://hub.localhost:8001").rstrip("/")
HUB_API_URL = env.str("HUB_API_URL", default="http://hub.localhost:8001/hub/api").rstrip("/")
HUB_API_TOKEN = env.str("HUB_API_TOKEN", default="")
HUB_SPAWN_SECRET = env.str("HUB_SPAWN_SECRET", default="")
HUB_OIDC_CLIENT_ID = env.str("HUB_OIDC_CLIENT_ID", default="")
HUB_OIDC_CLIENT_SECRET = env.str("HUB_OIDC_CLIENT_SECRET", default="")
HUB_ENV_FILE = VAR_DIR / "hub.env"
# Chrome and Safari apply form-action to every redirect that follows a form: signing in on the
# way to the hub (password, then two-factor) ends in a redirect to the hub's OAuth callback, so
# the hub's origin, part of this deployment, is the one other place a form may lead.
CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "form-action 'self'",
    "form-action 'self' " + "{0.scheme}://{0.netloc}".format(urlsplit(HUB_PUBLIC_URL)),
)

# --- Portal ---------------------------------------------------------------------------------
PROGRAMME_MANAGERS_GROUP = "programme_managers"
INVITATION_MAX_AGE_DAYS = env.int("INVITATION_MAX_AGE_DAYS", default=7)
HEALTH_CHECK_TIMEOUT_SECONDS = 2
DEMO_SEED_ALLOWED = True  # production.py turns it off: demo accounts have published passwords

# --- GPU credits ----------------------------------------------------------------------------
CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR = Decimal(
    env.str("CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR", default="750.00")
)
CREDITS_WARNING_THRESHOLDS_PERCENT = env.list(
    "CREDITS_WARNING_THRESHOLDS_PERCENT", cast=int, default=[20, 5]
)
# The review queue's service level: an application waiting longer than this is flagged.
CREDITS_REVIEW_SLA_DAYS = env.int("CREDITS_REVIEW_SLA_DAYS", default=5)
STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = env.int("STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS", default=10)
STUDENT_ALLOWANCE_RATE_PKR_PER_GPU_HOUR = Decimal(
    env.str("STUDENT_ALLOWANCE_RATE_PKR_PER_GPU_HOUR", default="750.00")
)
CELERY_BEAT_SCHEDULE = {
    "credits-expire-due-grants": {
        "task": "credits.grants_expire_due",
        "schedule": env.int("CREDITS_EXPIRY_INTERVAL_SECONDS", default=300),
    },
    # The student allowance (onboarding.tasks; the entry and the task keep their credits names).
    # Daily, not monthly: a student who joins mid-month, or a missed run, is caught up the same
    # day; the per-student, per-month key makes every run after the first a no-op.
    "credits-student-allowances": {
        "task": "credits.student_allowances_grant_month",
        "schedule": 60 * 60 * 6,
    },
}
# The programme's roll-ups (credits.services.rollups) are rebuilt from the accounts' this often:
# usage reaches the programme pages at most this late (grants and the like within seconds).
# Once a day a random sample of accounts' roll-ups is compared with their ledger entries.
CREDITS_ROLLUP_REFRESH_SECONDS = env.int("CREDITS_ROLLUP_REFRESH_SECONDS", default=60)
CELERY_BEAT_SCHEDULE["credits-rollups-refresh"] = {
    "task": "credits.rollups_refresh",
    "schedule": CREDITS_ROLLUP_REFRESH_SECONDS,
    "options": {"expires": CREDITS_ROLLUP_REFRESH_SECONDS},
}
CELERY_BEAT_SCHEDULE["credits-rollups-reconcile"] = {
    "task": "credits.rollups_reconcile",
    "schedule": 60 * 60 * 24,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Sandboxes: GPUs, launches, the hub -----------------------------------------------------
# nvml (a GPU host), none (CPU only), or simulated:<COUNT>x<MODEL>[,...] (no driver; labelled
# as simulated everywhere). local.py defaults to a simulated set so the demo has GPUs.
SANDBOX_GPU_BACKEND = env.str("SANDBOX_GPU_BACKEND", default="nvml")
SANDBOX_GPU_INVENTORY_INTERVAL = env.int("SANDBOX_GPU_INVENTORY_INTERVAL", default=60)
SANDBOX_MIN_RUNWAY_MINUTES = env.int("SANDBOX_MIN_RUNWAY_MINUTES", default=30)
SANDBOX_MAX_LIVE_PER_USER = env.int("SANDBOX_MAX_LIVE_PER_USER", default=3)
# How many GPUs one organisation (or one student) may hold at once; 0 means no cap.
SANDBOX_MAX_GPUS_PER_HOLDER = env.int("SANDBOX_MAX_GPUS_PER_HOLDER", default=4)
SANDBOX_RECONCILE_INTERVAL = env.int("SANDBOX_RECONCILE_INTERVAL", default=60)
SANDBOX_HOME_VOLUME_PREFIX = "nac-home-"
# A person whose starts failed this many times within the window waits before launching again
# (0: no limit); a start holds its GPUs, and is charged, until it fails.
SANDBOX_FAILED_STARTS_LIMIT = env.int("SANDBOX_FAILED_STARTS_LIMIT", default=5)
SANDBOX_FAILED_STARTS_WINDOW_SECONDS = env.int("SANDBOX_FAILED_STARTS_WINDOW_SECONDS", default=900)
# How often sandboxes past their profile's maximum age (ResourceProfile.max_age_seconds) stop.
SANDBOX_MAX_AGE_CHECK_INTERVAL = env.int("SANDBOX_MAX_AGE_CHECK_INTERVAL", default=60)
# The only addresses the internal API (/internal/hub/) answers: the hub's (loopback, and the
# gateway of the sandbox network, where the hub listens). Matched against the connection's peer
# (REMOTE_ADDR), never a forwarded header; addresses or networks.
HUB_INTERNAL_ALLOWED_IPS = env.list(
    "HUB_INTERNAL_ALLOWED_IPS", default=["127.0.0.1", "::1", "172.30.0.1"]
)
HUB_CLIENT_TIMEOUT = env.float("HUB_CLIENT_TIMEOUT", default=10.0)
HUB_CLIENT_RETRIES = env.int("HUB_CLIENT_RETRIES", default=3)
HUB_SPAWN_TIMEOUT = env.int("HUB_SPAWN_TIMEOUT", default=180)
HUB_ACCESS_TOKEN_LIFETIME = env.int("HUB_ACCESS_TOKEN_LIFETIME", default=3600)
DOCKER_URL = env.str("DOCKER_URL", default="unix:///var/run/docker.sock")
CELERY_BEAT_SCHEDULE.update(
    {
        "gpus-inventory-sync": {
            "task": "gpus.inventory_sync",
            "schedule": SANDBOX_GPU_INVENTORY_INTERVAL,
        },
        "launcher-reconcile": {
            "task": "launcher.sandboxes_reconcile",
            "schedule": SANDBOX_RECONCILE_INTERVAL,
        },
        "launcher-stop-over-age": {
            "task": "launcher.sandboxes_stop_over_age",
            "schedule": SANDBOX_MAX_AGE_CHECK_INTERVAL,
        },
    }
)

# The sandboxes' host firewall is re-ensured this often, and any drift audited (launcher.firewall;
# the worker must run as root, as under `make run`, else it only warns once).
SANDBOX_FIREWALL_CHECK_INTERVAL = env.int("SANDBOX_FIREWALL_CHECK_INTERVAL", default=300)
CELERY_BEAT_SCHEDULE["launcher-firewall-check"] = {
    "task": "launcher.firewall_check",
    "schedule": SANDBOX_FIREWALL_CHECK_INTERVAL,
    "options": {"expires": SANDBOX_FIREWALL_CHECK_INTERVAL},
}

# Home volumes are measured this often (launcher.disk): warnings near a profile's quota, and the
# figure a start is checked against.
SANDBOX_HOME_MEASURE_INTERVAL = env.int("SANDBOX_HOME_MEASURE_INTERVAL", default=15 * 60)
CELERY_BEAT_SCHEDULE["launcher-home-usage-measure"] = {
    "task": "launcher.home_usage_measure",
    "schedule": SANDBOX_HOME_MEASURE_INTERVAL,
    "options": {"expires": SANDBOX_HOME_MEASURE_INTERVAL},
}

# --- Metering: samples, charges, the stop countdown ------------------------------------------
# Every interval of every running sandbox is charged rate × allocated seconds (not utilisation);
# at an empty account the sandbox stops after the grace period (its home volume stays).
METERING_INTERVAL = env.int("METERING_INTERVAL", default=10)
METERING_GRACE_SECONDS = env.int("METERING_GRACE_SECONDS", default=120)
METERING_RAW_RETENTION_HOURS = env.int("METERING_RAW_RETENTION_HOURS", default=48)
METERING_MINUTE_ROLLUP_RETENTION_DAYS = env.int("METERING_MINUTE_ROLLUP_RETENTION_DAYS", default=30)
METERING_RECONCILE_INTERVAL = env.int("METERING_RECONCILE_INTERVAL", default=15 * 60)
CELERY_BEAT_SCHEDULE.update(
    {
        # A tick that could not run in its own interval is dropped, not queued: the next one
        # charges every interval since the last (a stopped worker leaves no pile of ticks).
        "metering-tick": {
            "task": "metering.tick",
            "schedule": METERING_INTERVAL,
            "options": {"expires": METERING_INTERVAL},
        },
        # The launcher stops the sandboxes whose credit countdown (recorded by the tick) is over,
        # as often as the tick runs: a stop comes at most one interval after its time.
        "launcher-stop-out-of-credits": {
            "task": "launcher.sandboxes_stop_out_of_credits",
            "schedule": METERING_INTERVAL,
            "options": {"expires": METERING_INTERVAL},
        },
        "metering-samples-prune": {"task": "metering.samples_prune", "schedule": 60 * 60},
        "metering-reconcile": {
            "task": "metering.reconcile",
            "schedule": METERING_RECONCILE_INTERVAL,
        },
    }
)

# --- Model API (inference): /llm/v1, model deployments, token charges --------------------------
# Weights live in the deployment's own model store: a catalogue model's `weights_path` is inside
# it, and nothing is downloaded at run time.
MODEL_STORE_DIR = Path(env.str("MODEL_STORE_DIR", default=str(VAR_DIR / "models")))
# Finished requests are charged to the ledger this often, one transaction per account.
LLM_CHARGE_INTERVAL = env.int("LLM_CHARGE_INTERVAL", default=10)
# Limits per key and per organisation (Redis, atomic): requests and tokens per minute, and
# streams open at once. A limit of 0 is no limit.
LLM_KEY_REQUESTS_PER_MINUTE = env.int("LLM_KEY_REQUESTS_PER_MINUTE", default=600)
LLM_KEY_TOKENS_PER_MINUTE = env.int("LLM_KEY_TOKENS_PER_MINUTE", default=200_000)
LLM_KEY_CONCURRENT_STREAMS = env.int("LLM_KEY_CONCURRENT_STREAMS", default=20)
LLM_ORGANISATION_REQUESTS_PER_MINUTE = env.int("LLM_ORGANISATION_REQUESTS_PER_MINUTE", default=3000)
LLM_ORGANISATION_TOKENS_PER_MINUTE = env.int(
    "LLM_ORGANISATION_TOKENS_PER_MINUTE", default=1_000_000
)
LLM_ORGANISATION_CONCURRENT_STREAMS = env.int("LLM_ORGANISATION_CONCURRENT_STREAMS", default=100)
# A request body larger than this is refused before it is read in full.
LLM_MAX_REQUEST_BYTES = env.int("LLM_MAX_REQUEST_BYTES", default=1024 * 1024)
# Upstream timeouts: to connect, and between two bytes of an answer.
LLM_UPSTREAM_CONNECT_TIMEOUT = env.float("LLM_UPSTREAM_CONNECT_TIMEOUT", default=2.0)
LLM_UPSTREAM_READ_TIMEOUT = env.float("LLM_UPSTREAM_READ_TIMEOUT", default=120.0)
# Replicas are probed this often; this many failed probes in a row take one out of rotation.
LLM_HEALTH_INTERVAL = env.int("LLM_HEALTH_INTERVAL", default=10)
LLM_HEALTH_FAILURES_TO_UNHEALTHY = env.int("LLM_HEALTH_FAILURES_TO_UNHEALTHY", default=3)
# The container image each engine runs in (inference.deployments.runner), by ServedModel.engine.
# llama.cpp's is built on this machine by `make images` (inference/images/llm-llamacpp), never
# pulled. vLLM has no CPU build and is not built here: a GPU site sets LLM_ENGINE_IMAGE_VLLM to
# the image it loaded itself; until then vLLM models cannot be deployed.
LLM_ENGINE_IMAGES = {
    "llama.cpp": env.str("LLM_ENGINE_IMAGE_LLAMA_CPP", default="nac/llm-llamacpp:2026.12"),
}
if env.str("LLM_ENGINE_IMAGE_VLLM", default=""):
    LLM_ENGINE_IMAGES["vllm"] = env.str("LLM_ENGINE_IMAGE_VLLM")
# Each engine container's limits and network (inference.deployments.runner), and how long a
# replica may take from its start to its first good probe before it is failed and retried.
LLM_ENGINE_CPUS = env.float("LLM_ENGINE_CPUS", default=2.0)
LLM_ENGINE_MEMORY_BYTES = env.int("LLM_ENGINE_MEMORY_BYTES", default=4 * 1024**3)
LLM_ENGINE_NETWORK = env.str("LLM_ENGINE_NETWORK", default="nac-llm")
LLM_REPLICA_START_TIMEOUT = env.int("LLM_REPLICA_START_TIMEOUT", default=900)
# Model usage (inference.usage.tasks): finished requests posted to the ledger every
# LLM_CHARGE_INTERVAL (a run still queued when the next is due expires), and request logs
# an organisation opted into deleted once their retention is over.
CELERY_BEAT_SCHEDULE["usage-model-charges-post"] = {
    "task": "usage.model_charges_post",
    "schedule": LLM_CHARGE_INTERVAL,
    "options": {"expires": LLM_CHARGE_INTERVAL},
}
CELERY_BEAT_SCHEDULE["usage-request-logs-delete-expired"] = {
    "task": "usage.request_logs_delete_expired",
    "schedule": 60 * 60,
}
# Model deployments (inference.deployments.tasks): every replica with an address probed each
# LLM_HEALTH_INTERVAL (a probe still queued when the next is due expires); the reconciler
# (containers against replicas, replicas against what deployments want, the line for GPUs)
# every LLM_RECONCILE_INTERVAL.
LLM_RECONCILE_INTERVAL = env.int("LLM_RECONCILE_INTERVAL", default=30)
CELERY_BEAT_SCHEDULE["deployments-health-probe"] = {
    "task": "deployments.health_probe",
    "schedule": LLM_HEALTH_INTERVAL,
    "options": {"expires": LLM_HEALTH_INTERVAL},
}
CELERY_BEAT_SCHEDULE["deployments-reconcile"] = {
    "task": "deployments.reconcile",
    "schedule": LLM_RECONCILE_INTERVAL,
    "options": {"expires": LLM_RECONCILE_INTERVAL},
}
