"""Fixtures of the gateway's tests: the real portal under uvicorn (in a thread of the test
process, so the test's settings and database are the server's), served models backed by the
real llama.cpp engines (registered as external replicas), funded payers with real keys, and a
small counting TCP proxy to watch what reaches an engine."""

import asyncio
import contextlib
import datetime as dt
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from inference.catalogue.models import ServedModel
from inference.deployments.models import Deployment
from inference.deployments.services import replica_register_external
from portal.apikeys.services import apikey_create
from portal.credits.models import CreditGrant
from portal.credits.services import account_for_organisation, account_for_student, grant_issue
from portal.organisations.models import Role
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

RATE = Decimal("750.00")
# Whole credit-seconds per token, so the ledger's charge (whole credit-seconds) equals the
# priced tokens exactly: a prompt token costs 1, a completion token 2.
INPUT_PRICE = Decimal("1000.000")
OUTPUT_PRICE = Decimal("2000.000")
FUNDS = 100_000


@pytest.fixture(autouse=True)
def _routes_forgotten():
    """Each test starts with no route the gateway read before (its 2 s cache)."""
    from inference.gateway.callers import routes_forget

    routes_forget()
    yield
    routes_forget()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _ServerThread(threading.Thread):
    def __init__(self, port: int):
        super().__init__(daemon=True, name="gateway-uvicorn")
        import uvicorn

        from portal.asgi import application

        self.server = uvicorn.Server(
            uvicorn.Config(
                application,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=2,
            )
        )

    def run(self) -> None:
        self.server.run()


@pytest.fixture(scope="session")
def gateway_server():
    """The portal (portal.asgi:application) under uvicorn on a free port: the base URL."""
    port = free_port()
    thread = _ServerThread(port)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        pytest.fail("the portal under uvicorn did not answer in 30 s")
    yield base
    thread.server.should_exit = True
    thread.join(timeout=10)


def fund(account, seconds: int = FUNDS) -> CreditGrant:
    return grant_issue(
        account=account,
        credit_seconds=seconds,
        rate_pkr_per_gpu_hour=RATE,
        expires_at=timezone.now() + dt.timedelta(days=30),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=f"test-lot:{uuid.uuid4()}",
    )


def served_model(name: str, *, task=ServedModel.Task.CHAT, **fields) -> ServedModel:
    values = {
        "name": name,
        "display_name": name,
        "task": task,
        "engine": ServedModel.Engine.LLAMA_CPP,
        "weights_path": "starter/tiny-chat.gguf",
        "licence": "Apache-2.0",
        "context_length": 512,
        "input_price": INPUT_PRICE,
        "output_price": OUTPUT_PRICE if task == ServedModel.Task.CHAT else Decimal("0"),
    }
    values.update(fields)
    return ServedModel.objects.create(**values)


def deploy(model: ServedModel, *engines) -> Deployment:
    """An active deployment of `model` whose replicas are the given engines (each anything
    with .base_url and .api_key), registered as the test harness registers external engines."""
    deployment = Deployment.objects.create(model=model, gpus_per_replica=0, replicas_wanted=0)
    for engine in engines:
        replica = replica_register_external(
            deployment=deployment, base_url=engine.base_url, api_key=engine.api_key
        )
        assert replica.state == "ready", replica.message
    return deployment


@dataclass
class Payer:
    """Who calls: the key's full secret, the account it pays from, the people around it."""

    secret: str
    key: object
    account: object
    organisation: object | None = None
    owner: object | None = None


def org_payer(*, scopes=("models:invoke",), funds: int = FUNDS) -> Payer:
    owner = UserFactory()
    organisation = OrganisationFactory()
    MembershipFactory(organisation=organisation, user=owner, role=Role.OWNER)
    account = account_for_organisation(organisation)
    if funds:
        fund(account, funds)
    key, secret = apikey_create(
        name="gateway test", scopes=list(scopes), acting_user=owner, organisation=organisation
    )
    return Payer(secret=secret, key=key, account=account, organisation=organisation, owner=owner)


def personal_payer(user=None, *, funds: int = FUNDS) -> Payer:
    user = user or UserFactory()
    account = account_for_student(user)
    if funds:
        fund(account, funds)
    key, secret = apikey_create(
        name="my key", scopes=["models:invoke"], acting_user=user, user=user
    )
    return Payer(secret=secret, key=key, account=account, owner=user)


@pytest.fixture
def chat_model(transactional_db, llama_chat_engine):
    model = served_model(llama_chat_engine.alias)
    deploy(model, llama_chat_engine)
    return model


@pytest.fixture
def embedding_model(transactional_db, llama_embedding_engine):
    model = served_model(
        llama_embedding_engine.alias,
        task=ServedModel.Task.EMBEDDING,
        weights_path="starter/minilm-l6-v2.gguf",
    )
    deploy(model, llama_embedding_engine)
    return model


@pytest.fixture
def payer(transactional_db):
    return org_payer()


@pytest.fixture
def client_for(gateway_server):
    """An official openai client on the gateway with a given key."""
    import openai

    def make(secret: str, **kwargs):
        return openai.OpenAI(
            base_url=f"{gateway_server}/llm/v1", api_key=secret, max_retries=0, **kwargs
        )

    return make


# --- A counting proxy in front of an engine ---------------------------------------------------


@dataclass
class ConnectionRecord:
    opened_at: float
    closed_at: float | None = None
    bytes_down: int = 0
    saw_done: bool = False
    gateway_ended_at: float | None = None  # the gateway closed its side
    generating: bool = False
    engine_ended_at: float | None = None  # the engine closed its side

    @property
    def closed_by_gateway(self) -> bool:
        return self.gateway_ended_at is not None and (
            self.engine_ended_at is None or self.gateway_ended_at < self.engine_ended_at
        )


@dataclass
class CountingProxy:
    """A real TCP proxy (its own thread and loop) in front of an engine: how many connections
    the gateway holds open to it at once, and how each ended."""

    engine: object
    port: int = 0
    open_now: int = 0
    most_open: int = 0
    # Generation requests (POST .../chat/completions) between their request line and their
    # [DONE] or the end of their connection: what the engine has in hand.
    generating_now: int = 0
    most_generating: int = 0
    # Hold each generation's answer back this long (an engine that queues the request).
    delay_answers_seconds: float = 0.0
    connections: list = field(default_factory=list)

    def _generation_started(self, record) -> None:
        record.generating = True
        self.generating_now += 1
        self.most_generating = max(self.most_generating, self.generating_now)

    def _generation_ended(self, record) -> None:
        if record.generating:
            record.generating = False
            self.generating_now -= 1

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def api_key(self) -> str:
        return self.engine.api_key

    async def _pipe(self, reader, writer, record: ConnectionRecord, down: bool):
        try:
            while data := await reader.read(65536):
                if down:
                    if record.generating and not record.bytes_down:
                        await asyncio.sleep(self.delay_answers_seconds)
                    record.bytes_down += len(data)
                    if b"[DONE]" in data:
                        record.saw_done = True
                        self._generation_ended(record)
                elif b"POST /v1/chat/completions" in data:
                    self._generation_started(record)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if down:
                record.engine_ended_at = record.engine_ended_at or time.monotonic()
            else:
                record.gateway_ended_at = record.gateway_ended_at or time.monotonic()
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    async def _handle(self, client_reader, client_writer):
        host, port = self.engine.base_url.split("//")[1].split("/")[0].split(":")
        engine_reader, engine_writer = await asyncio.open_connection(host, int(port))
        record = ConnectionRecord(opened_at=time.monotonic())
        self.connections.append(record)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await asyncio.gather(
                self._pipe(client_reader, engine_writer, record, down=False),
                self._pipe(engine_reader, client_writer, record, down=True),
            )
        finally:
            record.closed_at = time.monotonic()
            self._generation_ended(record)
            self.open_now -= 1

    def start(self) -> "CountingProxy":
        ready = threading.Event()

        async def main():
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            async with server:
                await self._stop.wait()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=5)


@pytest.fixture
def counting_proxy(llama_chat_engine):
    proxy = CountingProxy(llama_chat_engine).start()
    yield proxy
    proxy.stop()
