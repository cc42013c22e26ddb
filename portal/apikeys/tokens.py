"""The API key format: nac_<key id>_<secret><checksum>.

- `nac_` says what it is (secret scanners and support staff can spot one);
- the key id (12 characters) is public: it names the key in lists, logs and URLs;
- the secret is 43 base-62 characters from `secrets` (256 bits);
- the checksum (6 base-62 characters of CRC-32 over everything before it) lets a client, a
  scanner or this server reject a mistyped or made-up key without touching the database.

Only an HMAC-SHA256 of the secret, keyed with a server-side pepper, is ever stored.
"""

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

from django.conf import settings

PREFIX = "nac"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 43  # 62**43 > 2**256
CHECK_LENGTH = 6
_KEY_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_FORMAT = re.compile(
    rf"^{PREFIX}_([0-9a-z]{{{KEY_ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})"
    rf"([0-9A-Za-z]{{{CHECK_LENGTH}}})$"
)


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECK_LENGTH)


def key_generate() -> tuple[str, str, str]:
    """A new key: (full key to show once, key id, secret)."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    body = f"{PREFIX}_{key_id}_{secret}"
    return body + _checksum(body), key_id, secret


def key_parse(raw: str) -> ParsedKey | None:
    """The key id and secret of a well-formed key with a valid checksum; else None."""
    match = _FORMAT.match(raw or "")
    if match is None:
        return None
    key_id, secret, check = match.groups()
    if not hmac.compare_digest(check, _checksum(f"{PREFIX}_{key_id}_{secret}")):
        return None
    return ParsedKey(key_id, secret)


def secret_hash(secret: str) -> str:
    """HMAC-SHA256 of the secret under the pepper: a database dump alone cannot test guesses."""
    return hmac.new(settings.API_KEY_PEPPER.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(secret_hash(secret), stored_hash)
