"""The generation of what an API key's authentication is decided from, kept in Redis, so that a
process may remember who a key is between requests (the model gateway does, on its hot path)
and forget it the moment anything it was decided from changes, in every process.

A reader takes the generation before it reads the database and files what it read under that
generation; it uses a remembered answer only while the generation it reads now is the same.
Every change that can alter an answer moves the generation on (`keys_changed`): a key revoked
or saved (scopes, expiry), a key deleted, a membership or its role changed, a person or an
organisation saved or deleted (deactivation, suspension), the programme-managers group's
members changed (a personal key's scopes follow them). `receivers.py` connects these; a
`QuerySet.update` sends no signal, so services that change keys that way call `keys_changed`
themselves (`apikey_revoke`).

The generation moves twice: at once (a reader in this transaction, or a test without commits,
sees it) and again when the change commits, so an answer read from the database between the
two, when the change was not yet visible, is filed under a generation already gone. When Redis
cannot be reached, readers remember nothing (they read the database every time).
"""

import logging

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

_client: redis.Redis | None = None


def epoch_key() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:apikeys:epoch"


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1
        )
    return _client


def _bump() -> None:
    try:
        _redis().incr(epoch_key())
    except Exception:  # readers' entries still lapse by themselves (their short lifetime)
        logger.warning("could not move the API keys' generation on", exc_info=True)


def keys_changed() -> None:
    """Something an API key's authentication depends on changed: remembered answers go, now
    and again once the change commits."""
    _bump()
    transaction.on_commit(_bump, robust=True)
