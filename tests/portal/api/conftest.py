"""Fixtures for the REST API tests: keys, clients, a funded organisation, applications."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.apikeys.scopes import ALL_SCOPES, PROGRAMME_SCOPES
from portal.apikeys.services import apikey_create
from portal.credits.services import applications as workflow
from portal.credits.units import gpu_hours_to_credit_seconds
from tests.portal.credits.helpers import lot, org_account

API = "/api/v1"
PERSON_SCOPES = sorted(ALL_SCOPES - PROGRAMME_SCOPES)
APPLICATION = {
    "title": "Urdu speech recognition",
    "summary": "Fine-tune a Whisper model on 2,000 hours of public Urdu radio.",
    "sector": "language",
    "requested_gpu_hours": 500,
    "gpu_class": "h100",
    "duration_months": 3,
    "data_sensitivity": "public",
}
FUNDS_GPU_HOURS = 100


def approval(**overrides) -> dict:
    """A valid body for POST .../approve: the whole request, for 90 days."""
    expires_on = timezone.localdate() + dt.timedelta(days=90)
    return {
        "gpu_hours": 500,
        "expires_on": expires_on.isoformat(),
        "rate_pkr_per_gpu_hour": "750.00",
        **overrides,
    }


def make_key(*, user=None, organisation=None, scopes=PERSON_SCOPES, acting_user=None, name="t"):
    """A key and its full secret string. A person's key by default; `organisation` for a
    service key (acting_user: one of its owners)."""
    return apikey_create(
        name=name,
        scopes=scopes,
        acting_user=acting_user or user,
        user=user,
        organisation=organisation,
    )


def bearer(full_key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {full_key}"}


def key_client(full_key: str, **kwargs) -> APIClient:
    client = APIClient(**kwargs)
    client.credentials(**bearer(full_key))
    return client


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` with the one error shape; returns the "error" object."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert isinstance(error["code"], str), error
    assert error["code"], error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error["fields"], dict), error
    for name, messages in error["fields"].items():
        assert isinstance(name, str), error
        assert isinstance(messages, list), error
        assert messages, error
        assert all(isinstance(m, str) and m for m in messages), error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture
def funded(organisation, owner):
    """The organisation's credit account, with one lot of FUNDS_GPU_HOURS."""
    account = org_account(organisation)
    lot(account, gpu_hours_to_credit_seconds(FUNDS_GPU_HOURS))
    return account


@pytest.fixture
def owner_key(owner):
    """(ApiKey, full key) of the owner: every scope a person who is not a PM may hold."""
    return make_key(user=owner)


@pytest.fixture
def owner_api(owner_key) -> APIClient:
    return key_client(owner_key[1])


@pytest.fixture
def pm_key(programme_manager):
    return make_key(
        user=programme_manager, scopes=["programme:read", "programme:write", "applications:read"]
    )


@pytest.fixture
def pm_api(pm_key) -> APIClient:
    return key_client(pm_key[1])


def application_make(organisation, owner, *, submit=False, **overrides):
    application = workflow.application_create(
        organisation=organisation, acting_user=owner, **{**APPLICATION, **overrides}
    )
    if submit:
        workflow.application_submit(application=application, acting_user=owner)
        application.refresh_from_db()
    return application


@pytest.fixture
def submitted(organisation, owner):
    return application_make(organisation, owner, submit=True)
