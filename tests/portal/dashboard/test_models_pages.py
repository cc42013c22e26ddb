"""The model API's programme pages: a programme manager adds a model, changes its prices and
visibility, takes it out, deploys it on N GPUs x R replicas, scales and stops it, and reads a
month of model usage beside what serving cost. Bad input is a 400 that changes nothing."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from inference.catalogue.models import ServedModel
from inference.deployments.models import Deployment, Replica
from inference.usage.models import ModelRequest
from portal.audit.models import AuditEvent
from portal.credits.services import account_for_organisation, account_for_student
from tests.factories import OrganisationFactory, StudentProfileFactory
from tests.inference.catalogue.conftest import CHAT_WEIGHTS, served_model
from tests.inference.catalogue.conftest import store as store  # noqa: F401 - the fixture
from tests.inference.deployments.conftest import gpus, record_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def pm_client(client, programme_manager):
    client.force_login(programme_manager)
    return client


@pytest.fixture
def engine_tasks(monkeypatch, settings):
    """The engine images the deployments need, and their Docker tasks recorded, not run."""
    settings.LLM_ENGINE_IMAGES = {"llama.cpp": "nac/llm-llamacpp:test", "vllm": "nac/llm-vllm:test"}
    return record_tasks(monkeypatch, "deployments.replica_start", "deployments.replica_stop")


def new_model_form(**overrides) -> dict:
    data = {
        "name": "qalam-7b-chat",
        "display_name": "Qalam 7B chat",
        "task": "chat",
        "engine": "vllm",
        "weights_path": CHAT_WEIGHTS,
        "licence": "Apache-2.0",
        "context_length": "4096",
        "languages": "en, ur",
        "input_price": "0.125",
        "output_price": "0.250",
        "visibility": "all",
        "organisation": "",
        "cohort": "",
        "description": "",
    }
    data.update(overrides)
    return data


def catalogue_state() -> list:
    return sorted(
        ServedModel.objects.values_list(
            "pk", "name", "input_price", "output_price", "visibility", "organisation", "is_active"
        )
    )


def test_a_programme_manager_adds_a_model_from_the_form(store, pm_client, programme_manager):
    # when
    response = pm_client.post(reverse("dashboard:model_create"), new_model_form())

    # then
    model = ServedModel.objects.get(name="qalam-7b-chat")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:model", args=[model.public_id])
    assert model.languages == ["en", "ur"]
    assert model.input_price == Decimal("0.125")
    assert AuditEvent.objects.filter(action="model.created", actor=programme_manager).exists()
    listing = pm_client.get(reverse("dashboard:models")).content.decode()
    assert 'data-model="qalam-7b-chat"' in listing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input_price": "-1"}, "greater than or equal to 0"),
        ({"input_price": "0.1234"}, "3 decimal places"),
        ({"weights_path": "../../etc/passwd"}, "inside the model store"),
        ({"weights_path": "qalam/nothing-here.gguf"}, "nothing at"),
        ({"name": "playground"}, "reserved"),
        ({"visibility": "organisation"}, "Choose the organisation"),
        ({"organisation": str(uuid.uuid4()), "visibility": "organisation"}, "valid choice"),
    ],
)
def test_a_bad_model_form_is_a_400_that_changes_nothing(store, pm_client, overrides, message):
    # given
    before, events = catalogue_state(), AuditEvent.objects.count()

    # when
    response = pm_client.post(reverse("dashboard:model_create"), new_model_form(**overrides))

    # then
    assert response.status_code == 400
    assert message in response.content.decode()
    assert catalogue_state() == before
    assert AuditEvent.objects.count() == events


def test_prices_and_visibility_change_on_the_model_page(store, pm_client):
    # given
    model = served_model()
    startup = OrganisationFactory()
    data = new_model_form(
        input_price="1.5",
        output_price="2",
        visibility="organisation",
        organisation=str(startup.public_id),
    )
    del data["name"], data["task"], data["engine"]

    # when
    response = pm_client.post(reverse("dashboard:model", args=[model.public_id]), data)

    # then
    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.input_price, model.output_price) == (Decimal("1.500"), Decimal("2.000"))
    assert (model.visibility, model.organisation) == ("organisation", startup)
    event = AuditEvent.objects.get(action="model.updated")
    assert event.data["input_price"] == {"before": "0.125", "after": "1.500"}
    assert event.data["organisation"] == {"before": None, "after": str(startup.public_id)}


def test_a_bad_edit_changes_nothing(store, pm_client):
    model = served_model()
    before = catalogue_state()
    data = new_model_form(output_price="-0.5")
    response = pm_client.post(reverse("dashboard:model", args=[model.public_id]), data)
    assert response.status_code == 400
    assert catalogue_state() == before


def test_take_out_of_the_catalogue_and_offer_again(store, pm_client):
    model = served_model()
    url = reverse("dashboard:model_withdraw", args=[model.public_id])
    assert pm_client.post(url).status_code == 302
    model.refresh_from_db()
    assert not model.is_active
    assert pm_client.post(url, {"restore": "1"}).status_code == 302
    model.refresh_from_db()
    assert model.is_active


def test_deploy_scale_and_stop_from_the_model_page(
    store, pm_client, engine_tasks, django_capture_on_commit_callbacks
):
    # given a model and two simulated GPUs
    gpus("2xH100-80GB")
    model = served_model()

    # when it is deployed on 1 GPU x 2 replicas
    with django_capture_on_commit_callbacks(execute=True):
        response = pm_client.post(
            reverse("dashboard:model_deploy", args=[model.public_id]),
            {"gpus_per_replica": "1", "replicas": "2", "gpu_model": ""},
        )

    # then both replicas hold a GPU and start; the page shows them
    assert response.status_code == 302
    deployment = Deployment.objects.get(model=model, state="active")
    assert deployment.replicas_wanted == 2
    replicas = list(deployment.replicas.order_by("pk"))
    assert [r.state for r in replicas] == ["starting", "starting"]
    assert [name for name, _args in engine_tasks] == ["deployments.replica_start"] * 2
    page = pm_client.get(reverse("dashboard:model", args=[model.public_id])).content.decode()
    for replica in replicas:
        assert f'data-replica="{replica.public_id}" data-state="starting"' in page
        assert replica.gpu_uuids[0][:10] in page
        assert replica.api_key not in page  # the engine's secret never reaches a page
    deployments_page = pm_client.get(reverse("dashboard:model_deployments")).content.decode()
    assert f'data-deployment="{deployment.public_id}"' in deployments_page

    # when it is scaled to 1
    response = pm_client.post(
        reverse("dashboard:deployment_scale", args=[deployment.public_id]), {"replicas": "1"}
    )
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.replicas_wanted == 1
    assert Replica.objects.filter(deployment=deployment, state="stopping").count() == 1

    # when it is stopped
    response = pm_client.post(reverse("dashboard:deployment_stop", args=[deployment.public_id]))
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.state == "stopped"
    assert not Replica.objects.filter(deployment=deployment, state="starting").exists()


@pytest.mark.parametrize(
    "data",
    [
        {"gpus_per_replica": "17", "replicas": "1"},
        {"gpus_per_replica": "1", "replicas": "0"},
        {"gpus_per_replica": "-1", "replicas": "1"},
        {"gpus_per_replica": "3", "replicas": "1"},  # more GPUs than the machine has
        {"gpus_per_replica": "x", "replicas": "1"},
    ],
)
def test_a_bad_deployment_is_a_400_that_starts_nothing(store, pm_client, engine_tasks, data):
    gpus("2xH100-80GB")
    model = served_model()
    response = pm_client.post(reverse("dashboard:model_deploy", args=[model.public_id]), data)
    assert response.status_code == 400
    assert not Deployment.objects.exists()
    assert not Replica.objects.exists()
    assert engine_tasks == []


def test_a_deployed_model_cannot_be_taken_out_from_the_page(store, pm_client, engine_tasks):
    model = served_model()
    Deployment.objects.create(model=model, gpus_per_replica=0, replicas_wanted=1)
    response = pm_client.post(
        reverse("dashboard:model_withdraw", args=[model.public_id]), follow=True
    )
    assert "Stop its deployment" in response.content.decode()
    model.refresh_from_db()
    assert model.is_active


def request_row(model, account, *, prompt, completion, cost, status="posted", at=None):
    return ModelRequest.objects.create(
        request_id=f"req-{uuid.uuid4().hex}",
        account=account,
        model=model,
        endpoint="chat.completions",
        status=status,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_microcredits=cost,
        started_at=at or timezone.now(),
        finished_at=at or timezone.now(),
    )


def test_the_usage_report_sums_a_month_by_model_and_by_organisation(pm_client):
    # given two models used by a startup and a student this month, and older and unfinished use
    chat, embed = served_model(name="chat-a"), served_model(name="embed-b")
    startup = OrganisationFactory(legal_name="Kisan Awaz")
    startup_account = account_for_organisation(startup)
    student_account = account_for_student(StudentProfileFactory().user)
    request_row(chat, startup_account, prompt=100, completion=50, cost=1_500_000)
    request_row(chat, student_account, prompt=10, completion=5, cost=250_500, status="finished")
    request_row(embed, startup_account, prompt=1000, completion=0, cost=125_000)
    request_row(chat, startup_account, prompt=9, completion=9, cost=9_000_000, status="running")
    request_row(chat, startup_account, prompt=0, completion=0, cost=0, status="free")
    last_year = timezone.now() - dt.timedelta(days=400)
    request_row(chat, startup_account, prompt=7, completion=7, cost=7_000_000, at=last_year)

    # when
    html = pm_client.get(reverse("dashboard:model_usage")).content.decode()

    # then: 3 requests, 1,165 tokens, 1.875500 credit-seconds in all
    assert '<span class="stat-value" id="usage-requests">3</span>' in html
    assert '<span class="stat-value" id="usage-tokens">1165</span>' in html
    assert '<span class="stat-value" id="usage-credits">1.876</span>' in html
    by_model = html.split('id="usage-by-model"')[1].split("</table>")[0]
    assert (
        '<tr data-model="chat-a"><td><code>chat-a</code></td><td class="number">2</td>' in by_model
    )
    assert 'data-field="credit-seconds">1.751</td>' in by_model
    by_org = html.split('id="usage-by-organisation"')[1].split("</table>")[0]
    assert f'data-organisation="{startup.public_id}"' in by_org
    assert "Kisan Awaz" in by_org
    assert 'data-field="credit-seconds">1.625</td>' in by_org
    assert "Students (their own accounts)" in by_org


def test_the_usage_report_shows_what_serving_cost_in_gpu_time(pm_client):
    # given a replica that held 2 GPUs for the first hour of this month
    model = served_model(name="served")
    deployment = Deployment.objects.create(model=model, gpus_per_replica=2, replicas_wanted=1)
    start = timezone.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    Replica.objects.create(
        deployment=deployment,
        state="stopped",
        gpu_uuids=["GPU-a", "GPU-b"],
        started_at=start,
        stopped_at=start + dt.timedelta(hours=1),
    )

    # when
    html = pm_client.get(reverse("dashboard:model_usage")).content.decode()

    # then 2 GPU-hours, on the model's row and in all
    assert '<span class="stat-value" id="usage-serving">2.00</span>' in html
    assert 'data-field="gpu-hours">2.00</td>' in html
    assert 'id="serving-unknown"' not in html


def test_another_month_and_a_bad_month(pm_client):
    assert pm_client.get(reverse("dashboard:model_usage") + "?month=2026-01").status_code == 200
    assert pm_client.get(reverse("dashboard:model_usage") + "?month=2026-13").status_code == 404
    assert pm_client.get(reverse("dashboard:model_usage") + "?month=x").status_code == 404


def test_deploying_a_deployed_model_or_scaling_a_stopped_deployment_says_why(
    store, pm_client, engine_tasks
):
    # given a model deployed on CPU, and a stopped deployment of another
    deployed = served_model(name="deployed")
    Deployment.objects.create(model=deployed, gpus_per_replica=0, replicas_wanted=1)
    stopped = Deployment.objects.create(
        model=served_model(name="stopped"), gpus_per_replica=0, replicas_wanted=1, state="stopped"
    )
    before = sorted(Deployment.objects.values_list("pk", "state", "replicas_wanted"))

    # when the manager deploys the first again, and scales the stopped one
    again = pm_client.post(
        reverse("dashboard:model_deploy", args=[deployed.public_id]),
        {"gpus_per_replica": "0", "replicas": "1"},
        follow=True,
    )
    scaled = pm_client.post(
        reverse("dashboard:deployment_scale", args=[stopped.public_id]),
        {"replicas": "3"},
        follow=True,
    )

    # then each page says why, and nothing changed
    assert "This model is deployed already" in again.content.decode()
    assert "This deployment is stopped." in scaled.content.decode()
    assert sorted(Deployment.objects.values_list("pk", "state", "replicas_wanted")) == before
    assert not Replica.objects.exists()


def test_the_usage_export_has_the_page_rows_with_exact_microcredits(pm_client):
    # given
    chat = served_model(name="chat-a")
    startup = OrganisationFactory(legal_name="Kisan Awaz")
    request_row(chat, account_for_organisation(startup), prompt=100, completion=50, cost=1_500_001)

    # when
    response = pm_client.get(reverse("dashboard:model_usage_export"))

    # then
    lines = b"".join(response.streaming_content if response.streaming else [response.content])
    rows = [line.split(",") for line in lines.decode().splitlines()]
    assert response["Content-Disposition"].startswith('attachment; filename="model-usage-')
    assert rows[0][:4] == ["dimension", "key", "name", "requests"]
    assert rows[1][:8] == ["model", "chat-a", "chat-a", "1", "100", "50", "1500001", "1.500"]
    assert rows[2][:7] == [
        "organisation",
        str(startup.public_id),
        "Kisan Awaz",
        "1",
        "100",
        "50",
        "1500001",
    ]
    assert rows[3][0] == "total"
    assert rows[3][6] == "1500001"
