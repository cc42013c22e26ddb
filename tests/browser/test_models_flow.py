"""The model API in a real browser, against the portal under uvicorn (the gateway streams over
ASGI) and a real llama.cpp engine: a programme manager adds a model to the catalogue and
deploys it; a founder reads the model's page, makes a key with models:invoke (and calls the
model with the openai client and that key), then chats in the playground, which streams the
answer and shows its tokens and cost; in Urdu the page reads right to left. Nothing the
browser asks for leaves the deployment."""

import re

import openai
import pytest
from django.conf import settings as django_settings
from django.test import Client
from playwright.sync_api import expect

from inference.catalogue.models import ServedModel
from inference.deployments.models import Deployment
from inference.deployments.services import replica_register_external
from inference.usage.models import ModelRequest
from portal.credits.services import account_for_organisation
from portal.organisations.models import Role
from tests.browser.conftest import TIMEOUT_MS, RequestLog
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.inference.conftest import (  # noqa: F401 - fixtures
    llama_chat_engine,
    model_store,
    model_store_settings,
)
from tests.inference.deployments.conftest import record_tasks
from tests.inference.gateway.conftest import fund, gateway_server  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STREAM_TIMEOUT_MS = 30_000
USAGE_LINE = re.compile(r"^(\d+) tokens in, (\d+) out · (\d+\.\d+) credit-seconds$")


@pytest.fixture(autouse=True)
def _routes_forgotten():
    """The gateway caches routes for 2 s: start and end with none from another test."""
    from inference.gateway.callers import routes_forget

    routes_forget()
    yield
    routes_forget()


def signed_in(browser, base_url: str, user, log: RequestLog, *, locale: str = "en-GB"):
    """A browser context (its own cookies) signed in as `user`; the test client's sign-in
    passes the second factor (tests/conftest.py), as a programme manager's session must."""
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    context = browser.new_context(base_url=base_url, locale=locale)
    context.set_default_timeout(TIMEOUT_MS)
    log.watch(context)
    context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": base_url}])
    return context


def test_a_model_is_added_deployed_and_called_from_the_playground(
    browser,
    gateway_server,  # noqa: F811
    llama_chat_engine,  # noqa: F811
    model_store_settings,  # noqa: F811
    programme_manager,
    settings,
    monkeypatch,
):
    # Given a founder whose startup has credits, a programme manager with an authenticator,
    # and the engine's container start recorded rather than run (the test's own engine stands
    # in for the container, as an external replica)
    settings.LLM_ENGINE_IMAGES = {"llama.cpp": "nac/llm-llamacpp:test", "vllm": "nac/llm-vllm:t"}
    started = record_tasks(monkeypatch, "deployments.replica_start", "deployments.replica_stop")
    founder = UserFactory(email="founder@kisanawaz.pk")
    startup = OrganisationFactory(legal_name="Kisan Awaz (Private) Limited")
    MembershipFactory(organisation=startup, user=founder, role=Role.OWNER)
    account = account_for_organisation(startup)
    fund(account, 10_000)
    log = RequestLog(gateway_server)
    name = llama_chat_engine.alias

    # When the programme manager adds the model to the catalogue
    manager = signed_in(browser, gateway_server, programme_manager, log).new_page()
    manager.goto("/programme/models/")
    manager.get_by_role("link", name="Add a model").click()
    manager.get_by_label(re.compile(r"^Name:?$")).fill(name)
    manager.get_by_label("Display name").fill("Tiny chat (test)")
    manager.get_by_label("Task").select_option("chat")
    manager.get_by_label("Engine").select_option("llama.cpp")
    manager.get_by_label("Weights").fill("starter/tiny-chat.gguf")
    manager.get_by_label("Licence").fill("Apache-2.0")
    manager.get_by_label("Context length (tokens)").fill("512")
    manager.get_by_label("Languages").fill("en, ur")
    manager.get_by_label("Input price").fill("1.5")
    manager.get_by_label("Output price").fill("3")
    manager.get_by_label("Offered to").select_option("all")
    manager.get_by_role("button", name="Add to the catalogue").click()

    # Then it is in the catalogue, not yet deployed
    expect(manager.locator("#model-state")).to_have_text("In the catalogue")
    model = ServedModel.objects.get(name=name)
    assert model.input_price == 1.5

    # When they deploy it on CPU, one replica
    manager.get_by_label("GPUs per replica").fill("0")
    manager.get_by_label("Replicas").fill("1")
    manager.get_by_role("button", name="Deploy").click()

    # Then the replica is starting: its container's start was asked for
    deployment = Deployment.objects.get(model=model, state="active")
    expect(manager.locator(f"#replicas-{deployment.public_id} [data-field=state]")).to_have_text(
        "Starting"
    )
    assert [task for task, _args in started] == ["deployments.replica_start"]

    # When the test's engine is registered as a replica (it answers its first probe)
    replica = replica_register_external(
        deployment=deployment,
        base_url=llama_chat_engine.base_url,
        api_key=llama_chat_engine.api_key,
    )
    assert replica.state == "ready", replica.message

    # Then the programme manager's page shows it ready without a reload (it refreshes the
    # replicas every 5 s), and never its key
    expect(
        manager.locator(f'[data-replica="{replica.public_id}"] [data-field=state]')
    ).to_have_text("Ready", timeout=15_000)
    assert llama_chat_engine.api_key not in manager.content()

    # When the founder opens the model's page from the catalogue
    context = signed_in(browser, gateway_server, founder, log)
    page = context.new_page()
    page.goto("/")
    page.get_by_role("link", name="Model API").click()
    page.get_by_role("link", name=name, exact=True).click()

    # Then it says how to call it, what it costs and that nothing of a prompt is kept
    expect(page.locator("#base-url")).to_have_text(f"{gateway_server}/llm/v1")
    expect(page.locator("#input-price")).to_contain_text("1500.000 credit-seconds")
    expect(page.locator("#privacy-note")).to_contain_text(
        "Nothing of a prompt or completion is stored or logged unless your organisation turns "
        "on request logging"
    )
    expect(page.locator("#example-python")).to_contain_text(f'model="{name}"')

    # When they make a key for the startup with models:invoke
    page.get_by_role("link", name="Create an API key").first.click()
    page.get_by_label(re.compile(r"^Name:?$")).fill("model key")
    page.get_by_label("Belongs to").select_option(label=startup.legal_name)
    page.locator('input[name="scopes"][value="models:invoke"]').check()
    page.get_by_role("button", name="Make key").click()
    secret = page.locator("#new-key-value").input_value()
    assert secret

    # Then the openai client calls the model with it
    client = openai.OpenAI(base_url=f"{gateway_server}/llm/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Salam"}], max_tokens=8
    )
    assert answer.usage.completion_tokens >= 1

    # When they chat in the playground, paid by the startup
    page.goto(f"/models/{name}/")
    page.get_by_role("link", name="Try it in the playground").click()
    expect(page.get_by_label("Paid from")).to_have_value(str(startup.public_id))
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Your message").fill("What should a wheat farmer do in March?")
    page.get_by_role("button", name="Send").click()

    # Then the answer streams in, and ends with its tokens and its cost
    answer_meta = page.locator(".message.assistant .meta").last
    expect(answer_meta).to_have_text(USAGE_LINE, timeout=STREAM_TIMEOUT_MS)
    prompt, completion, cost = USAGE_LINE.match(answer_meta.inner_text()).groups()
    request = ModelRequest.objects.filter(account=account, api_key__isnull=True).get()
    assert (int(prompt), int(completion)) == (request.prompt_tokens, request.completion_tokens)
    assert int(completion) >= 1
    exact = model.cost_microcredits(
        prompt_tokens=request.prompt_tokens, completion_tokens=request.completion_tokens
    )
    assert request.cost_microcredits == exact
    assert float(cost) == pytest.approx(exact / 1_000_000, abs=0.001)
    expect(page.locator("#pg-error")).to_be_hidden()
    expect(page.locator(".message.user .text")).to_have_attribute("dir", "auto")

    # When they switch to Urdu and write in Urdu
    page.locator("#language-select").select_option("ur")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.get_by_role("heading", level=1)).to_have_text("آزمائشی صفحہ")
    page.locator("#pg-input").fill("گندم کے کاشتکار کو مارچ میں کیا کرنا چاہیے؟")
    page.locator("#pg-send").click()

    # Then their message reads right to left, and the answer still ends with its cost
    question = page.locator(".message.user .text").last
    expect(question).to_have_text("گندم کے کاشتکار کو مارچ میں کیا کرنا چاہیے؟")
    assert question.evaluate("e => getComputedStyle(e).direction") == "rtl"
    expect(page.locator(".message.assistant .meta").last).to_contain_text(
        "کریڈٹ سیکنڈ", timeout=STREAM_TIMEOUT_MS
    )

    # And nothing the browser asked for left the deployment
    log.assert_only_live_server()


def test_the_playground_says_clearly_when_credits_run_out_or_no_replica_is_up(
    browser,
    gateway_server,  # noqa: F811
    llama_chat_engine,  # noqa: F811
):
    # Given a startup with no credits, a model served by the real engine, and a model whose
    # deployment has no replica up
    founder = UserFactory()
    startup = OrganisationFactory(legal_name="Empty Pockets (Private) Limited")
    MembershipFactory(organisation=startup, user=founder, role=Role.OWNER)
    served = ServedModel.objects.create(
        name="served-chat",
        display_name="Served",
        task=ServedModel.Task.CHAT,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path="starter/tiny-chat.gguf",
        licence="Apache-2.0",
        context_length=512,
        languages=["en"],
        input_price="1.000",
        output_price="1.000",
    )
    deployment = Deployment.objects.create(model=served, gpus_per_replica=0, replicas_wanted=0)
    replica_register_external(
        deployment=deployment,
        base_url=llama_chat_engine.base_url,
        api_key=llama_chat_engine.api_key,
    )
    idle = ServedModel.objects.create(
        name="idle-chat",
        display_name="Idle",
        task=ServedModel.Task.CHAT,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path="starter/tiny-chat.gguf",
        licence="Apache-2.0",
        context_length=512,
        languages=["en"],
        input_price="1.000",
        output_price="1.000",
    )
    Deployment.objects.create(model=idle, gpus_per_replica=0, replicas_wanted=0)
    log = RequestLog(gateway_server)
    page = signed_in(browser, gateway_server, founder, log).new_page()

    # When they ask the served model, with nothing to pay with
    page.goto("/models/playground/?model=served-chat")
    page.get_by_label("Your message").fill("Hello")
    page.get_by_role("button", name="Send").click()

    # Then they are told they are out of credits; the question comes back to the box to retry
    expect(page.locator("#pg-error")).to_have_text(re.compile(r"^Out of credits"))
    expect(page.locator(".message")).to_have_count(0)
    expect(page.get_by_label("Your message")).to_have_value("Hello")

    # When they ask the model with no replica up (credits would not be reached)
    page.get_by_label("Model", exact=True).select_option("idle-chat")
    page.get_by_role("button", name="Send").click()

    # Then they are told no replica is running
    expect(page.locator("#pg-error")).to_have_text(
        "No replica of this model is running right now. Try again later."
    )
    assert not ModelRequest.objects.exclude(status="free").exists()
    log.assert_only_live_server()
