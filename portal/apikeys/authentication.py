"""DRF authentication by `Authorization: Bearer <key>`."""

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions

from portal.audit.services import client_ip

from .services import KeyRejected, apikey_authenticate


class ServiceAccount:
    """Who acts when an organisation's service key is used: the organisation, not a person.

    It is authenticated, but it is no one's user: it cannot sign in, has no groups and is
    never a programme manager.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    is_service_account = True
    pk = None
    id = None
    email = ""

    def __init__(self, organisation):
        self.organisation = organisation

    def __str__(self) -> str:
        return f"service key of {self.organisation}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        try:
            header = authentication.get_authorization_header(request).split()
        except UnicodeError as exc:
            # DRF encodes a str header as ISO-8859-1; anything outside it is a client's mistake
            # (or a probe), told like any other bad key, never a 500.
            raise exceptions.AuthenticationFailed(_("Invalid or expired API key.")) from exc
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # not ours: session authentication may still apply
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Send exactly: Authorization: Bearer <key>."))
        try:
            raw = header[1].decode("ascii")
            key = apikey_authenticate(raw=raw, ip=client_ip(request))
        except (UnicodeDecodeError, KeyRejected) as exc:
            # The same answer for malformed, unknown, revoked and expired keys; never the key.
            raise exceptions.AuthenticationFailed(_("Invalid or expired API key.")) from exc
        principal = key.user if key.user_id else ServiceAccount(key.organisation)
        return principal, key

    def authenticate_header(self, request) -> str:
        return self.keyword
