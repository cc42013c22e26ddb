"""The model gateway's overhead against calling the engine directly, in the same run: `make bench`
(not a test: pytest collects only test_*.py).

Starts a real llama.cpp engine (`python -m llama_cpp.server`, the tiny chat model written at
start into a temporary model store, one thread) and the portal under uvicorn with ONE worker
(portal.asgi:application, DEBUG=False) against a PostgreSQL database of its own
(BENCH_MODELS_DATABASE, default portal_bench_models, created, migrated and dropped here, on the
server at BENCH_POSTGRES_URL), seeds a funded organisation with a models:invoke key and the model
deployed on that engine (an external replica), then measures each pair in alternation, the
engine directly and through /llm/v1:

- a non-streaming chat request (max_tokens=1): p50 latency, BENCH_MODELS_REQUESTS of each
  (default 200); the gateway's added p50 must be <= 5 ms;
- time to first token of a streamed chat request (max_tokens=4): p50, as many; added <= 10 ms;
- BENCH_MODELS_STREAMS concurrent streams (default 200, max_tokens=BENCH_MODELS_STREAM_TOKENS,
  default 32) through the one worker: all must complete ([DONE], no error), and the p95 of the
  delays between two tokens of a stream must be <= 1.2 x the same crowd sent to the engine.

It prints

  BENCH models_chat_p50: <ms> ms (baseline <direct ms> ms, ratio <r>)
  BENCH models_chat_added_p50: <ms> ms (baseline 5 ms, ratio <r>)
  BENCH models_ttft_p50: <ms> ms (baseline <direct ms> ms, ratio <r>)
  BENCH models_ttft_added_p50: <ms> ms (baseline 10 ms, ratio <r>)
  BENCH models_streams_itl_p95: <ms> ms (baseline <direct ms> ms, ratio <r>)
  BENCH models_streams_completed: <n> streams (baseline <n> streams, ratio <r>)
  BENCH models_portal_floor_p50: <ms> ms (baseline <direct plain ms> ms, ratio <r>)
  BENCH models_key_and_model_p50: <ms> ms (baseline <floor ms> ms, ratio <r>)

(the last two say where the added time goes: GET /healthz through the same server, and a chat
request refused as soon as its key and model are read, an unknown model's 404)

and whether the targets were met. The llama.cpp engine serves one request at a time, so the
concurrent streams queue at the engine in both runs alike: the comparison is of the delays
between tokens once a stream runs. Exit status 1 when a request failed or a stream did not
complete, 2 when BENCH_STRICT=1 and a target is missed.
"""

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_MODELS_DATABASE", "portal_bench_models")
REQUESTS = int(os.environ.get("BENCH_MODELS_REQUESTS", "200"))
STREAMS = int(os.environ.get("BENCH_MODELS_STREAMS", "200"))
STREAM_TOKENS = int(os.environ.get("BENCH_MODELS_STREAM_TOKENS", "32"))
ADDED_P50_TARGET_MS = 5.0
ADDED_TTFT_TARGET_MS = 10.0
ITL_P95_RATIO_TARGET = 1.2
HOST = "127.0.0.1"
MODEL = "tiny-chat"
MESSAGES = [{"role": "user", "content": "Say hello to the national AI cloud."}]

SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "portal.settings.local",
    "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
    "DEBUG": "False",
    "ALLOWED_HOSTS": HOST,
    "SECRET_KEY": secrets.token_urlsafe(64),
    "API_KEY_PEPPER": secrets.token_urlsafe(32),
    "CACHE_KEY_PREFIX": f"bench-models-{os.getpid()}",
    "LOG_LEVEL": "WARNING",
    # The limits must not cut the run: it measures the path, not the limits' refusals.
    "LLM_KEY_REQUESTS_PER_MINUTE": str(10**9),
    "LLM_KEY_TOKENS_PER_MINUTE": str(10**12),
    "LLM_KEY_CONCURRENT_STREAMS": str(10**6),
    "LLM_ORGANISATION_REQUESTS_PER_MINUTE": str(10**9),
    "LLM_ORGANISATION_TOKENS_PER_MINUTE": str(10**12),
    "LLM_ORGANISATION_CONCURRENT_STREAMS": str(10**6),
    "LLM_UPSTREAM_READ_TIMEOUT": "600",
}
os.environ.update(SERVER_ENV)


# --- The engine --------------------------------------------------------------------------------


def engine_start(store: Path, log) -> tuple[subprocess.Popen, str, str]:
    """The tiny chat model under llama.cpp's server: (process, base URL, its key)."""
    import httpx

    from inference.catalogue.starter_models import tiny_chat_write

    path = tiny_chat_write(path=store / "starter" / "tiny-chat.gguf")
    port = common.free_port(HOST)
    key = secrets.token_urlsafe(24)
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", MODEL,
        # one argument: a key that starts with "-" would be read as an option
        "--host", HOST, "--port", str(port), f"--api_key={key}", "--n_ctx", "512",
        "--n_threads", "1", "--interrupt_requests", "false", "--verbose", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=log)  # noqa: S603 - fixed arguments
    base = f"http://{HOST}:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"BENCH engine: exited with status {process.returncode}")
        try:
            if httpx.get(f"{base}/models", headers=_auth(key), timeout=1).status_code == 200:
                return process, base, key
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("BENCH engine: no answer in 60 s")


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- Fixtures -------------------------------------------------------------------------------


def seed(engine_base: str, engine_key: str) -> str:
    """A funded organisation's models:invoke key, and the model deployed on the engine."""
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from inference.catalogue.models import ServedModel
    from inference.deployments.models import Deployment
    from inference.deployments.services import replica_register_external
    from portal.apikeys.services import apikey_create
    from portal.credits.models import CreditGrant
    from portal.credits.services import account_for_organisation, grant_issue
    from portal.organisations.models import Role
    from tests.factories import MembershipFactory

    founder = MembershipFactory(role=Role.OWNER)
    grant_issue(
        account=account_for_organisation(founder.organisation),
        credit_seconds=10**9,
        rate_pkr_per_gpu_hour=Decimal("750.00"),
        expires_at=timezone.now() + dt.timedelta(days=90),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key="bench-models-funds",
    )
    model = ServedModel.objects.create(
        name=MODEL,
        display_name="Tiny chat",
        task=ServedModel.Task.CHAT,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path="starter/tiny-chat.gguf",
        licence="Apache-2.0",
        context_length=512,
        input_price=Decimal("0.010"),
        output_price=Decimal("0.020"),
    )
    deployment = Deployment.objects.create(model=model, gpus_per_replica=0, replicas_wanted=0)
    replica = replica_register_external(
        deployment=deployment, base_url=engine_base, api_key=engine_key
    )
    if replica.state != "ready":
        raise SystemExit(f"BENCH seed: the engine's replica is {replica.state}")
    _, full_key = apikey_create(
        name="bench",
        scopes=["models:invoke"],
        acting_user=founder.user,
        organisation=founder.organisation,
    )
    return full_key


# --- Measuring -----------------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return seconds * 1000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Failures(Exception):
    pass


async def plain(client, base: str, key: str) -> float:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1, "temperature": 0}
    start = time.perf_counter()
    response = await client.post(f"{base}/chat/completions", json=body, headers=_auth(key))
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise Failures(f"plain request: HTTP {response.status_code} {response.text[:200]}")
    return elapsed


async def stream(client, base: str, key: str, max_tokens: int) -> tuple[float, list[float]]:
    """(time to the first content token, the delays between tokens after it)."""
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    first, last, gaps, done = None, None, [], False
    async with client.stream(
        "POST", f"{base}/chat/completions", json=body, headers=_auth(key)
    ) as response:
        if response.status_code != 200:
            raise Failures(f"stream: HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise Failures(f"stream: error event {chunk['error'].get('code')}")
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
            if "content" not in delta:
                continue
            now = time.perf_counter()
            if first is None:
                first = now - start
            else:
                gaps.append(now - last)
            last = now
    if not done:
        raise Failures("stream: ended without [DONE]")
    return first or 0.0, gaps


async def _timed_status(client, method: str, url: str, expected: int, **kwargs) -> float:
    start = time.perf_counter()
    response = await client.request(method, url, **kwargs)
    elapsed = time.perf_counter() - start
    if response.status_code != expected:
        raise Failures(f"{method} {url}: HTTP {response.status_code}, not {expected}")
    return elapsed


async def parts(client, gateway: str, key: str) -> dict:
    """Where the added time goes: the portal's floor (GET /healthz), and a request refused
    right after the key and the model are read (an unknown model: 404), before any limit,
    hold or engine."""
    root = gateway.removesuffix("/llm/v1")
    body = {"model": "no-such-model", "messages": MESSAGES, "max_tokens": 1}
    out = {"healthz": [], "key_and_model": []}
    for _ in range(REQUESTS):
        out["healthz"].append(await _timed_status(client, "GET", f"{root}/healthz", 200))
        out["key_and_model"].append(
            await _timed_status(
                client, "POST", f"{gateway}/chat/completions", 404, json=body, headers=_auth(key)
            )
        )
    return out


async def measure(gateway: str, gateway_key: str, engine: str, engine_key: str) -> dict:
    import httpx

    sides = {"direct": (engine, engine_key), "gateway": (gateway, gateway_key)}
    out = {"plain": {s: [] for s in sides}, "ttft": {s: [] for s in sides}}
    limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=STREAMS + 10)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        for base, key in sides.values():  # warm both paths: connections, caches
            for _ in range(5):
                await plain(client, base, key)
                await stream(client, base, key, 4)
        for i in range(REQUESTS):
            # alternate which goes first, so a drift of the machine weighs on both alike
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                out["plain"][side].append(await plain(client, *sides[side]))
            for side in order:
                ttft, _gaps = await stream(client, *sides[side], 4)
                out["ttft"][side].append(ttft)
        out["parts"] = await parts(client, gateway, gateway_key)
        out["crowd"] = {}
        for side in ("direct", "gateway"):
            results = await asyncio.gather(
                *(stream(client, *sides[side], STREAM_TOKENS) for _ in range(STREAMS)),
                return_exceptions=True,
            )
            gaps = [g for r in results if not isinstance(r, BaseException) for g in r[1]]
            failed = [r for r in results if isinstance(r, BaseException)]
            out["crowd"][side] = {"gaps": gaps, "completed": STREAMS - len(failed),
                                  "errors": [str(f) for f in failed[:3]]}  # fmt: skip
    return out


def report(result: dict) -> tuple[bool, bool]:
    """Print the BENCH lines: (every request succeeded, every target met)."""
    p50 = {kind: {side: _ms(statistics.median(v)) for side, v in result[kind].items()}
           for kind in ("plain", "ttft")}  # fmt: skip
    added_plain = p50["plain"]["gateway"] - p50["plain"]["direct"]
    added_ttft = p50["ttft"]["gateway"] - p50["ttft"]["direct"]
    crowd = result["crowd"]
    itl = {side: _ms(_percentile(crowd[side]["gaps"], 0.95)) for side in crowd}

    def line(name, value, unit, baseline):
        ratio = value / baseline if baseline else 0.0
        say(f"BENCH {name}: {value:.2f} {unit} (baseline {baseline:.2f} {unit}, ratio {ratio:.2f})")

    line("models_chat_p50", p50["plain"]["gateway"], "ms", p50["plain"]["direct"])
    line("models_chat_added_p50", added_plain, "ms", ADDED_P50_TARGET_MS)
    line("models_ttft_p50", p50["ttft"]["gateway"], "ms", p50["ttft"]["direct"])
    line("models_ttft_added_p50", added_ttft, "ms", ADDED_TTFT_TARGET_MS)
    line("models_streams_itl_p95", itl["gateway"], "ms", itl["direct"])
    # Where the added time goes (no target): the portal's floor, and the key and model read.
    floor = _ms(statistics.median(result["parts"]["healthz"]))
    line("models_portal_floor_p50", floor, "ms", p50["plain"]["direct"])
    key_and_model = _ms(statistics.median(result["parts"]["key_and_model"]))
    line("models_key_and_model_p50", key_and_model, "ms", floor)
    completed = crowd["gateway"]["completed"]
    say(
        f"BENCH models_streams_completed: {completed} streams "
        f"(baseline {STREAMS} streams, ratio {completed / STREAMS:.2f})"
    )
    for side in crowd:
        for error in crowd[side]["errors"]:
            say(f"BENCH models_streams {side} failure: {error}")
    ok = completed == STREAMS and crowd["direct"]["completed"] == STREAMS
    itl_ratio = itl["gateway"] / itl["direct"] if itl["direct"] else float("inf")
    met = (
        added_plain <= ADDED_P50_TARGET_MS
        and added_ttft <= ADDED_TTFT_TARGET_MS
        and itl_ratio <= ITL_P95_RATIO_TARGET
    )
    say(
        f"BENCH targets: added p50 <= {ADDED_P50_TARGET_MS:g} ms, added TTFT <= "
        f"{ADDED_TTFT_TARGET_MS:g} ms, p95 inter-token <= {ITL_P95_RATIO_TARGET:g} x direct: "
        f"{'MET' if met else 'NOT MET'}; {REQUESTS} requests of each kind, {STREAMS} streams of "
        f"{STREAM_TOKENS} tokens, one uvicorn worker"
    )
    return ok, met


def main() -> int:
    say(
        f"BENCH setup: database {DATABASE}, one uvicorn worker, a llama.cpp engine (tiny chat, "
        f"one thread); {REQUESTS} requests per kind, {STREAMS} concurrent streams"
    )
    common.database_create(SERVER_URL, DATABASE)
    engine = server = None
    engine_log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - written until the end
    server_log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    store = Path(tempfile.mkdtemp(prefix="bench-models-store-"))
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        engine, engine_base, engine_key = engine_start(store, engine_log)
        full_key = seed(engine_base, engine_key)
        connections.close_all()
        for connection in connections.all():
            connection.close_pool()
        port = common.free_port(HOST)
        base = f"http://{HOST}:{port}"
        server = common.uvicorn_start(port, {**os.environ, **SERVER_ENV}, server_log)
        common.server_wait(base, server)
        try:
            result = asyncio.run(measure(f"{base}/llm/v1", full_key, engine_base, engine_key))
        except Failures as exc:
            say(f"BENCH models: FAILED: {exc}")
            return 1
        ok, met = report(result)
        if not ok:
            return 1
        if not met and os.environ.get("BENCH_STRICT") == "1":
            return 2
        return 0
    finally:
        if server is not None:
            common.server_stop(server)
            server_log.seek(0)
            lines = server_log.read().splitlines()
            errors = [line for line in lines if " ERROR " in line]
            if errors:
                say(f"BENCH server errors: {len(errors)}, the last: {errors[-1][:300]}")
                # what the gateway said of its replicas meanwhile (a 5xx, a broken stream)
                for warning in [line for line in lines if " WARNING inference." in line][-3:]:
                    say(f"BENCH server warning: {warning[:300]}")
        if engine is not None:
            common.server_stop(engine)
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        try:
            from django.db import connections

            connections.close_all()
            for connection in connections.all():
                connection.close_pool()
        except Exception:  # noqa: S110 - tearing down; the drop below says if it fails
            pass
        common.database_drop(SERVER_URL, DATABASE)


if __name__ == "__main__":
    sys.exit(main())
