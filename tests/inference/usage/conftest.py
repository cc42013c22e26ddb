"""Fixtures of the usage tests: a priced model, funded accounts, keys, and held requests."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from inference.catalogue.models import ServedModel
from portal.apikeys.models import ApiKey
from portal.credits.models import CreditAccount, CreditGrant
from portal.credits.services import account_for_organisation, account_for_student, grant_issue
from tests.factories import OrganisationFactory, UserFactory

RATE = Decimal("750.00")


def served_model(**fields) -> ServedModel:
    """A chat model priced 1.5 credit-seconds per 1,000 input tokens and 2.25 per 1,000 output
    tokens: a token costs 1,500 and 2,250 microcredit-seconds."""
    values = {
        "name": f"test-chat-{uuid.uuid4().hex[:8]}",
        "display_name": "Test chat",
        "task": ServedModel.Task.CHAT,
        "engine": ServedModel.Engine.LLAMA_CPP,
        "weights_path": "starter/tiny-chat.gguf",
        "licence": "Apache-2.0",
        "context_length": 512,
        "input_price": Decimal("1.500"),
        "output_price": Decimal("2.250"),
    }
    values.update(fields)
    return ServedModel.objects.create(**values)


def fund(account: CreditAccount, seconds: int, *, days: float = 30) -> CreditGrant:
    """A lot of `seconds` on the account, expiring in `days`."""
    return grant_issue(
        account=account,
        credit_seconds=seconds,
        rate_pkr_per_gpu_hour=RATE,
        expires_at=timezone.now() + dt.timedelta(days=days),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=f"test-lot:{uuid.uuid4()}",
    )


def org_key(organisation, *, name="org key") -> ApiKey:
    return ApiKey.objects.create(
        name=name,
        organisation=organisation,
        key_id=uuid.uuid4().hex[:16],
        secret_hash=uuid.uuid4().hex,
        scopes=["models:invoke"],
        expires_at=timezone.now() + dt.timedelta(days=30),
    )


def personal_key(user, *, name="my key") -> ApiKey:
    return ApiKey.objects.create(
        name=name,
        user=user,
        key_id=uuid.uuid4().hex[:16],
        secret_hash=uuid.uuid4().hex,
        scopes=["models:invoke"],
        expires_at=timezone.now() + dt.timedelta(days=30),
    )


@pytest.fixture
def model():
    return served_model()


@pytest.fixture
def organisation():
    return OrganisationFactory()


@pytest.fixture
def org_account(organisation):
    return account_for_organisation(organisation)


@pytest.fixture
def key(organisation):
    return org_key(organisation)


@pytest.fixture
def student():
    return UserFactory()


@pytest.fixture
def student_account(student):
    return account_for_student(student)
