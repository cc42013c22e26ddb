"""The code a programme manager's authenticator app shows, for the load test's sign-ins.

Locust's process has no Django (allauth's own TOTP code reads Django's settings), so the test
computes the code itself, by RFC 6238 with allauth's parameters: HMAC-SHA1 over the 30-second
period's counter, six digits. test_mix.py checks it against allauth.
"""

import base64
import hashlib
import hmac
import struct

TOTP_PERIOD_SECONDS = 30
DIGITS = 6


def totp_code(secret: str, *, counter: int) -> str:
    """The code for the base32 `secret` in period `counter` (Unix time // 30)."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**DIGITS:0{DIGITS}d}"
