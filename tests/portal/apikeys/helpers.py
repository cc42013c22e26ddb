"""Shared steps for the API-key tests."""

from django.urls import reverse
from rest_framework.test import APIClient

from portal.apikeys.models import ApiKey
from portal.apikeys.tokens import key_parse
from portal.audit.models import AuditEvent

LIST_URL = "/api-keys/"
ME_URL = "/api/v1/me"


def create_through_page(client, **overrides):
    data = {
        "name": "CI pipeline",
        "owner": "personal",
        "scopes": ["profile:read"],
        "expires_in_days": "90",
        **overrides,
    }
    return client.post(reverse("apikeys:list"), data)


def secret_of(full_key: str) -> str:
    parsed = key_parse(full_key)
    assert parsed is not None, "not a well-formed key"
    return parsed.secret


def api_get(full_key: str, url: str = ME_URL):
    return APIClient().get(url, HTTP_AUTHORIZATION=f"Bearer {full_key}")


def assert_secret_stored_nowhere(full_key: str) -> None:
    """Only the HMAC of the secret is in the database: no column of any key row (nor of the
    audit log) holds the secret or the full key."""
    secret = secret_of(full_key)
    rows = [*ApiKey.objects.values(), *AuditEvent.objects.values()]
    assert rows
    for row in rows:
        assert row.get("secret_hash") != secret
        for value in row.values():
            assert secret not in str(value)
            assert full_key not in str(value)
