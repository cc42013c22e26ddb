"""The catalogue's services: a programme manager adds, changes, takes out and offers again a
model; every rule refuses bad input with a clear error on its field and changes nothing."""

import os
from decimal import Decimal

import pytest

from inference.catalogue.models import ServedModel
from inference.catalogue.services import (
    served_model_create,
    served_model_restore,
    served_model_update,
    served_model_withdraw,
)
from inference.deployments.models import Deployment
from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError

from .conftest import EMBED_WEIGHTS, model_fields, served_model

pytestmark = pytest.mark.django_db


def snapshot() -> dict:
    return {
        "models": sorted(
            ServedModel.objects.values_list(
                "pk", "name", "input_price", "output_price", "visibility", "is_active", "updated_at"
            )
        ),
        "audit": AuditEvent.objects.count(),
    }


def test_a_programme_manager_adds_a_model(store, programme_manager):
    # when
    model = served_model_create(acting_user=programme_manager, ip="10.0.0.7", **model_fields())

    # then
    model.refresh_from_db()
    assert model.name == "qalam-7b-chat"
    assert model.input_price == Decimal("0.125")
    assert model.output_price == Decimal("0.250")
    assert model.languages == ["en", "ur"]
    assert model.visibility == ServedModel.Visibility.ALL
    assert model.is_active
    assert model.created_by == programme_manager
    event = AuditEvent.objects.get(action="model.created")
    assert event.actor == programme_manager
    assert event.target_id == str(model.pk) or event.target_repr == str(model)
    assert event.data["input_price"] == "0.125"
    assert event.data["weights_path"] == model.weights_path
    assert event.ip == "10.0.0.7"


def test_an_embedding_model_has_no_output_price(store, programme_manager):
    model = served_model_create(
        acting_user=programme_manager,
        **model_fields(
            name="minilm",
            task=ServedModel.Task.EMBEDDING,
            weights_path=EMBED_WEIGHTS,
            output_price="0",
        ),
    )
    assert model.output_price == 0


BAD_CREATES = [
    ("name", {"name": "has space"}),
    ("name", {"name": "-starts-with-hyphen"}),
    ("name", {"name": "x" * 101}),
    ("name", {"name": "playground"}),
    ("name", {"name": "Request-Logging"}),
    ("weights_path", {"weights_path": "../outside.gguf"}),
    ("weights_path", {"weights_path": "/etc/passwd"}),
    ("weights_path", {"weights_path": "qalam/../../outside.gguf"}),
    ("weights_path", {"weights_path": "qalam/missing.gguf"}),
    ("weights_path", {"weights_path": ".hidden/model.gguf"}),
    ("input_price", {"input_price": "-0.001"}),
    ("input_price", {"input_price": "0.0001"}),
    ("input_price", {"input_price": "NaN"}),
    ("input_price", {"input_price": "Infinity"}),
    ("input_price", {"input_price": "1e12"}),
    ("input_price", {"input_price": "cheap"}),
    ("output_price", {"output_price": "-1"}),
    ("output_price", {"task": "embedding", "weights_path": EMBED_WEIGHTS, "output_price": "0.5"}),
    ("context_length", {"context_length": 8}),
    ("context_length", {"context_length": "4096"}),
    ("languages", {"languages": ["en", "not a code"]}),
    ("languages", {"languages": "en"}),
    ("languages", {"languages": []}),
    ("organisation", {"visibility": "organisation"}),
    ("cohort", {"visibility": "cohort"}),
    ("visibility", {"visibility": "friends"}),
    ("task", {"task": "images"}),
    ("engine", {"engine": "ollama"}),
    ("display_name", {"display_name": "  "}),
    ("licence", {"licence": ""}),
    ("description", {"description": "nul \x00 byte"}),
]


@pytest.mark.parametrize(
    ("field", "overrides"), BAD_CREATES, ids=[f"{f}-{i}" for i, (f, _o) in enumerate(BAD_CREATES)]
)
def test_bad_input_is_refused_on_its_field_and_nothing_is_written(
    store, programme_manager, field, overrides
):
    # given
    before = snapshot()

    # when
    with pytest.raises(ApplicationError) as refused:
        served_model_create(acting_user=programme_manager, **model_fields(**overrides))

    # then
    assert refused.value.field == field
    assert refused.value.message
    assert snapshot() == before


def test_a_symbolic_link_out_of_the_store_is_refused(store, programme_manager, tmp_path):
    # given a file outside the store and a link to it inside
    outside = tmp_path / "secret.gguf"
    outside.write_bytes(b"GGUF")
    os.symlink(outside, store / "qalam" / "escape.gguf")
    before = snapshot()

    # when / then
    with pytest.raises(ApplicationError) as refused:
        served_model_create(
            acting_user=programme_manager, **model_fields(weights_path="qalam/escape.gguf")
        )
    assert refused.value.field == "weights_path"
    assert snapshot() == before


def test_a_name_is_taken_whatever_its_case(store, programme_manager):
    served_model_create(acting_user=programme_manager, **model_fields())
    before = snapshot()
    with pytest.raises(ApplicationError) as refused:
        served_model_create(acting_user=programme_manager, **model_fields(name="QALAM-7B-CHAT"))
    assert refused.value.field == "name"
    assert snapshot() == before


def test_visibility_keeps_only_the_holder_it_names(store, programme_manager, acme, cohort_student):
    # given everyone as the visibility, with an organisation and a cohort passed along anyway
    model = served_model_create(
        acting_user=programme_manager,
        **model_fields(organisation=acme["organisation"], cohort=cohort_student["cohort"]),
    )
    assert (model.organisation, model.cohort) == (None, None)

    # when it is offered to the cohort, with the organisation still passed
    served_model_update(
        model=model,
        acting_user=programme_manager,
        visibility="cohort",
        cohort=cohort_student["cohort"],
        organisation=acme["organisation"],
    )

    # then
    model.refresh_from_db()
    assert model.visibility == "cohort"
    assert model.cohort == cohort_student["cohort"]
    assert model.organisation is None


def test_an_update_changes_prices_and_audits_before_and_after(store, programme_manager):
    # given
    model = served_model_create(acting_user=programme_manager, **model_fields())

    # when
    served_model_update(
        model=model, acting_user=programme_manager, input_price="0.500", output_price="0.250"
    )

    # then
    model.refresh_from_db()
    assert model.input_price == Decimal("0.500")
    event = AuditEvent.objects.get(action="model.updated")
    assert event.data == {"input_price": {"before": "0.125", "after": "0.500"}}


def test_an_update_that_changes_nothing_is_not_audited(store, programme_manager):
    model = served_model_create(acting_user=programme_manager, **model_fields())
    served_model_update(model=model, acting_user=programme_manager, input_price="0.125")
    assert not AuditEvent.objects.filter(action="model.updated").exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "renamed"}, "name"),
        ({"task": "embedding"}, "task"),
        ({"input_price": "-1"}, "input_price"),
        ({"output_price": "0.1234"}, "output_price"),
        ({"weights_path": "../x"}, "weights_path"),
        ({"visibility": "organisation", "organisation": None}, "organisation"),
    ],
)
def test_a_bad_update_changes_nothing(store, programme_manager, fields, field):
    # given
    model = served_model_create(acting_user=programme_manager, **model_fields())
    before = snapshot()

    # when
    with pytest.raises(ApplicationError) as refused:
        served_model_update(model=model, acting_user=programme_manager, **fields)

    # then
    assert refused.value.field == field
    assert snapshot() == before


def test_withdraw_and_restore(store, programme_manager):
    # given
    model = served_model_create(acting_user=programme_manager, **model_fields())

    # when it is taken out
    served_model_withdraw(model=model, acting_user=programme_manager)

    # then no one sees it, and taking it out again is refused
    assert not model.is_active
    assert not ServedModel.objects.offered().filter(pk=model.pk).exists()
    with pytest.raises(ApplicationError):
        served_model_withdraw(model=model, acting_user=programme_manager)

    # when it is offered again
    served_model_restore(model=model, acting_user=programme_manager)
    assert model.is_active
    assert list(
        AuditEvent.objects.filter(action__startswith="model.").values_list("action", flat=True)
    ) == ["model.restored", "model.withdrawn", "model.created"]


def test_a_deployed_model_cannot_be_taken_out(store, programme_manager):
    # given a model with an active deployment
    model = served_model(weights_path="qalam/7b-chat-q4.gguf")
    Deployment.objects.create(model=model, gpus_per_replica=0, replicas_wanted=1)
    before = snapshot()

    # when / then
    with pytest.raises(ApplicationError) as refused:
        served_model_withdraw(model=model, acting_user=programme_manager)
    assert "deployment" in refused.value.message
    assert snapshot() == before
