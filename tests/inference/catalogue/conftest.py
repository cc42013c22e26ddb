"""The catalogue tests' world: a model store with two weights files, the people of the role
matrix, and a helper that makes a model straight in the database (as a fixture, not through the
service under test)."""

import uuid
from decimal import Decimal

import pytest

from inference.catalogue.models import ServedModel
from portal.organisations.models import Role
from tests.factories import (
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
)

CHAT_WEIGHTS = "qalam/7b-chat-q4.gguf"
EMBED_WEIGHTS = "minilm/model.gguf"


@pytest.fixture
def store(tmp_path, settings):
    """A model store of this test's own, holding a chat model's file and an embedding model's."""
    root = tmp_path / "models"
    for relative in (CHAT_WEIGHTS, EMBED_WEIGHTS):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF" + b"\0" * 60)
    settings.MODEL_STORE_DIR = root
    return root


def model_fields(**overrides) -> dict:
    fields = {
        "name": "qalam-7b-chat",
        "display_name": "Qalam 7B chat",
        "task": ServedModel.Task.CHAT,
        "engine": ServedModel.Engine.VLLM,
        "weights_path": CHAT_WEIGHTS,
        "licence": "Apache-2.0",
        "context_length": 4096,
        "languages": ["en", "ur"],
        "input_price": Decimal("0.125"),
        "output_price": Decimal("0.250"),
    }
    fields.update(overrides)
    return fields


def served_model(**overrides) -> ServedModel:
    fields = model_fields(**overrides)
    fields.setdefault("name", f"m-{uuid.uuid4().hex[:8]}")
    return ServedModel.objects.create(**fields)


@pytest.fixture
def acme():
    """An organisation with its owner, an admin and a member."""
    owner = MembershipFactory(role=Role.OWNER)
    organisation = owner.organisation
    return {
        "organisation": organisation,
        "owner": owner.user,
        "admin": MembershipFactory(organisation=organisation, role=Role.ADMIN).user,
        "member": MembershipFactory(organisation=organisation, role=Role.MEMBER).user,
    }


@pytest.fixture
def rival():
    """Another organisation, with its owner: the attacker of the visibility tests."""
    owner = MembershipFactory(role=Role.OWNER, organisation=OrganisationFactory())
    return {"organisation": owner.organisation, "owner": owner.user}


@pytest.fixture
def cohort_student():
    cohort = CohortFactory()
    return {"cohort": cohort, "student": StudentProfileFactory(cohort=cohort).user}
