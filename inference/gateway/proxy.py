"""The gateway's core: one request from admission to the last byte, for /llm/v1 and the
playground alike.

    check the context -> limits (requests, tokens) -> a place in flight (lease)
      -> hold the maximum cost -> a replica (least outstanding; another one on a failed connect
      or a 5xx, only before the first byte reaches the client) -> the answer, normalised
      -> finish with the engine's usage (or release, when nothing was produced)
      -> give back unused tokens, the lease and the replica count

Whatever happens after the lease is taken (an engine error, a client that leaves, a
cancelled task), the `finally` blocks release what was taken: the hold is finished or
released, the lease removed. The clean-up runs shielded from a second cancellation.

Nothing of a prompt or a completion is logged here, only ids, models, statuses and counts. The
content is kept only through `request_log_record`, and only for an organisation that opted in.
"""

import asyncio
import base64
import contextlib
import functools
import json
import logging
import math
import struct
import time
import uuid
import weakref
from dataclasses import dataclass
from decimal import Decimal

import httpx
from django.http import HttpResponse, StreamingHttpResponse

from inference.catalogue.models import ServedModel
from inference.deployments.services import replica_unhealthy_report
from inference.usage import services as usage_services
from inference.usage.services import QuotaExceeded, request_finish, request_hold, request_release
from portal.core.exceptions import PermissionDenied

from . import db, errors, limits, upstream
from .callers import Caller
from .router import router
from .streaming import CHAT, COMPLETIONS, DONE, StreamNormaliser
from .validation import ParsedRequest

logger = logging.getLogger(__name__)

EMBEDDINGS = "embeddings"
PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions", EMBEDDINGS: "/embeddings"}
ID_PREFIX = {CHAT: "chatcmpl-", COMPLETIONS: "cmpl-", EMBEDDINGS: "embd-"}
MAX_ERROR_BODY_BYTES = 64 * 1024
DRAIN_SECONDS = 0.05
PROMPT_COUNT_SECONDS = 10


@dataclass
class Call:
    """One request on its way through the gateway."""

    caller: Caller
    model: ServedModel
    targets: list
    endpoint: str
    parsed: ParsedRequest
    original_body: dict
    playground: bool = False


def new_request_id(endpoint: str) -> str:
    return ID_PREFIX[endpoint] + uuid.uuid4().hex


def cost_credit_seconds(microcredits: int) -> str:
    return f"{Decimal(microcredits) / 1_000_000:f}"


# --- Counting the prompt ------------------------------------------------------------------------


async def _prompt_tokens_exact(call: Call, target=None) -> int | None:
    """The prompt's tokens by the engine's own tokenizer (for embeddings: the longest input's);
    None when the replica could not count."""
    parsed = call.parsed
    target = target or call.targets[0]
    count = functools.partial(
        upstream.tokens_count,
        engine=call.model.engine,
        base_url=target.base_url,
        api_key=target.api_key,
        model=call.model.name,
    )
    try:
        if call.endpoint == CHAT:
            return await count(messages=parsed.upstream["messages"])
        if call.endpoint == EMBEDDINGS:
            return max([await count(text=text) for text in parsed.prompt_texts])
        return await count(text=parsed.upstream["prompt"])
    except (httpx.HTTPError, ValueError):
        return None


async def _budget(call: Call) -> tuple[int, int, bool]:
    """(the prompt's tokens at most, max_tokens, whether the prompt's count is the engine's
    exact one) within the model's context, or a 400 context_length_exceeded. max_tokens
    defaults to what the context leaves. The byte bound is used while it fits; the engine's
    tokenizer is asked only when it does not."""
    parsed = call.parsed
    context = call.model.context_length
    if call.endpoint == EMBEDDINGS:
        longest = max(len(t.encode()) + 2 for t in parsed.prompt_texts)
        if longest > context:
            exact = await _prompt_tokens_exact(call)
            if exact is not None and exact > context:
                raise errors.context_length_exceeded(
                    context_length=context, prompt_tokens=exact, max_tokens=0
                )
        return parsed.prompt_tokens_bound, 0, False
    prompt, is_exact = parsed.prompt_tokens_bound, False
    wanted = parsed.max_tokens or 1
    if prompt + wanted > context:
        exact = await _prompt_tokens_exact(call)
        if exact is not None:
            prompt, is_exact = exact, True
        if prompt + wanted > context:
            raise errors.context_length_exceeded(
                context_length=context, prompt_tokens=prompt, max_tokens=parsed.max_tokens or 0
            )
    return prompt, parsed.max_tokens or context - prompt, is_exact


# --- The answer's bodies ------------------------------------------------------------------------


def _embeddings_out(payload: dict, *, request_id: str, model_name: str, encoding: str) -> dict:
    """The engine's embeddings, L2-normalised (llama.cpp does not, sentence-transformers
    does; MODELS.md §7), in the form the client asked for (the openai client asks for base64,
    which llama.cpp ignores: encoded here, little-endian float32 as OpenAI's)."""
    data = []
    for index, item in enumerate(payload.get("data") or []):
        vector = item.get("embedding")
        if isinstance(vector, str):  # an engine that honoured base64 itself
            raw = base64.b64decode(vector)
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if isinstance(vector, list) and vector and isinstance(vector[0], list):
            vector = vector[0]  # llama.cpp gives one vector per token when pooling is off
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vector = [v / norm for v in vector]
        if encoding == "base64":
            out = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        else:
            out = vector
        data.append({"object": "embedding", "index": item.get("index", index), "embedding": out})
    usage = payload.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens", 0)
    return {
        "object": "list",
        "id": request_id,
        "data": data,
        "model": model_name,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _completion_text(payload: dict, endpoint: str) -> str:
    choices = payload.get("choices") or [{}]
    if endpoint == CHAT:
        return ((choices[0].get("message") or {}).get("content")) or ""
    return choices[0].get("text") or ""


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# --- Books ----------------------------------------------------------------------------------


async def _finish(call: Call, request_id: str, *, usage: dict, error_code: str = ""):
    return await db.hop(request_finish, release=True)(
        request_id=request_id,
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        error_code=error_code,
    )


async def _release(request_id: str, error_code: str) -> None:
    await db.hop(request_release, release=True)(request_id=request_id, error_code=error_code)


async def _log(call: Call, request_id: str, text: str) -> None:
    if call.caller.keeps_content:
        await db.hop(usage_services.request_log_record, release=True)(
            request_id=request_id, request_body=call.original_body, response_text=text
        )


async def _report_unhealthy(target, reason: str) -> None:
    try:
        await db.hop(replica_unhealthy_report)(replica_id=target.replica_id, reason=reason)
    except Exception:  # health bookkeeping must never fail the request that noticed it
        logger.exception("replica %s: could not record a failure", target.replica_id)


async def _shielded(coro) -> None:
    """Run clean-up to its end even if the request's task is cancelled again meanwhile."""
    task = asyncio.ensure_future(coro)
    # Cancelled meanwhile: the task runs on to its end.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


_pending: set[asyncio.Task] = set()


def background(coro) -> None:
    """Run `coro` after the answer, kept until it ends (books_drain waits for it)."""
    task = asyncio.ensure_future(coro)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def books_drain() -> None:
    """Wait for the books of answers already sent (at shutdown)."""
    if _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)


# --- The request ------------------------------------------------------------------------------


async def serve(call: Call) -> HttpResponse:
    """Answer `call`: a JSON response, an SSE stream, or an OpenAI error."""
    try:
        return await _serve(call)
    except errors.GatewayError as exc:
        return exc.response()
    except Exception:
        # Whatever was taken is given back by _serve's own clean-up; the client gets OpenAI's
        # shape, and the log the trace (never the request's content: it is in no local here
        # that the trace prints).
        logger.exception("model %s: the gateway failed", call.model.name)
        return errors.internal().response()


async def _serve(call: Call) -> HttpResponse:
    model, parsed = call.model, call.parsed
    if not call.targets:
        raise errors.no_replica(model.name)
    prompt_tokens, max_tokens, prompt_exact = await _budget(call)
    admission, lease = await limits.admit_and_lease(
        holder=call.caller.holder, tokens=prompt_tokens + max_tokens
    )
    request_id = new_request_id(call.endpoint)
    state = _State(call, request_id, admission, lease, prompt_tokens)
    state.prompt_exact = prompt_tokens if prompt_exact else None
    try:
        await state.hold(max_tokens)
        body = {**parsed.upstream, "model": model.name}
        if call.endpoint != EMBEDDINGS:
            body["max_tokens"] = max_tokens
        if parsed.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        first = None
        if parsed.stream and model.engine == ServedModel.Engine.LLAMA_CPP and not prompt_exact:
            # llama.cpp sends no usage in a stream: the prompt is counted by its tokenizer,
            # asked now, before the generation, on the same replica, where it is served first
            # (one request at a time) rather than after the whole queue when the stream ends.
            first = router.choose(call.targets, tried=set())
            state.prompt_count = asyncio.ensure_future(_prompt_tokens_exact(call, first))
        response, target = await state.connect(body, first=first)
    except BaseException:
        await _shielded(state.close_failed())
        raise
    if parsed.stream:
        return await state.stream(response, target)
    try:
        answer = await state.answer(response, target)
    except BaseException:
        await _shielded(state.close_failed())
        raise
    # The engine's answer is read in full: the place in flight is given back now (the caller's
    # next request may come at once); the unused tokens just after the answer leaves, with its
    # books.
    await state.lease_release()
    background(state.books_close())
    background(state.close())
    return answer


class _State:
    """What one request has taken, so that whatever happens it is all given back once."""

    def __init__(self, call: Call, request_id: str, admission, lease, prompt_tokens: int):
        self.call = call
        self.request_id = request_id
        self.admission = admission
        self.lease = lease
        self.prompt_tokens = prompt_tokens
        self.held = False
        self.settled = False  # finished or released
        self.tokens_used = 0
        self.target = None
        self.response: httpx.Response | None = None
        self.closed = False
        self.prompt_exact: int | None = None  # the engine's count of the prompt, once known
        self.started = False  # the stream's generator began
        self.prompt_count: asyncio.Future | None = None  # the engine counting the prompt
        # The lease is renewed while the request lives, whether bytes flow or not (an engine
        # that queues a request may send nothing for long).
        self.renewer = asyncio.ensure_future(_lease_keep(lease))
        self.lease_released = False
        self.books: tuple[dict, str] | None = None  # a plain answer's usage and text

    # -- before the engine

    async def hold(self, max_tokens: int) -> None:
        caller, model = self.call.caller, self.call.model
        if caller.account is None:
            raise errors.insufficient_quota()
        max_cost = model.cost_microcredits(
            prompt_tokens=self.prompt_tokens, completion_tokens=max_tokens
        )
        try:
            # A stream then waits on the engine for long: its connection goes back to the pool.
            await db.hop(request_hold, release=self.call.parsed.stream)(
                request_id=self.request_id,
                account=caller.account,
                model=model,
                endpoint=self.call.endpoint,
                stream=self.call.parsed.stream,
                max_cost_microcredits=max_cost,
                api_key=caller.api_key,
                user=caller.user,
            )
        except QuotaExceeded as exc:
            raise errors.insufficient_quota() from exc
        except PermissionDenied as exc:  # the callers' rules choose the account: a bug if so
            raise errors.GatewayError(
                403,
                "This account does not pay for this caller's requests.",
                type="permission_error",
                code="insufficient_permissions",
            ) from exc
        self.held = True

    async def connect(self, body: dict, *, first=None):
        """A response from a replica whose status is 2xx (its body not yet read), trying
        another replica on a failed connection or a 5xx. A 4xx is the request's fault: it is
        answered, in our words, without trying elsewhere."""
        model = self.call.model
        client = upstream.client()
        tried: set[int] = set()
        failures = 0
        while True:
            target = first if first is not None and not tried else None
            target = target or router.choose(self.call.targets, tried=tried)
            if target is None:
                if failures:
                    raise errors.upstream_failed(model.name)
                raise errors.no_replica(model.name)
            tried.add(target.replica_id)
            request = client.build_request(
                "POST",
                target.base_url + PATHS[self.call.endpoint],
                json=body,
                headers=upstream.headers_for(target.api_key),
            )
            router.take(target)
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                router.give_back(target)
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    failures += 1
                    await _report_unhealthy(target, "The gateway could not connect in time.")
                    continue
                raise errors.upstream_timeout(model.name) from exc
            except httpx.HTTPError:
                router.give_back(target)
                failures += 1
                await _report_unhealthy(target, "The gateway could not reach it.")
                continue
            except BaseException:
                router.give_back(target)
                raise
            if response.status_code < 400:
                self.target, self.response = target, response
                return response, target
            payload = await _error_payload(response)
            router.give_back(target)
            if response.status_code >= 500 or response.status_code in (401, 403):
                # 401/403: the replica's engine key is not the one recorded: its fault, not ours
                failures += 1
                logger.warning(
                    "replica %s answered %s before the first byte",
                    target.replica_id,
                    response.status_code,
                )
                await _report_unhealthy(target, f"It answered HTTP {response.status_code}.")
                continue
            raise errors.upstream_error(
                status=response.status_code,
                payload=payload,
                model_name=model.name,
                context_length=model.context_length,
            )

    # -- a plain answer

    async def answer(self, response: httpx.Response, target) -> HttpResponse:
        call, model = self.call, self.call.model
        try:
            raw = await response.aread()
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (httpx.HTTPError, ValueError) as exc:
            await _report_unhealthy(target, "It sent an answer that is not JSON.")
            raise errors.upstream_failed(model.name) from exc
        if call.endpoint == EMBEDDINGS:
            out = _embeddings_out(
                payload,
                request_id=self.request_id,
                model_name=model.name,
                encoding=call.parsed.encoding_format,
            )
            usage = {"prompt_tokens": out["usage"]["prompt_tokens"], "completion_tokens": 0}
            text = ""
        else:
            usage_in = payload.get("usage") or {}
            prompt = _count(usage_in.get("prompt_tokens"))
            completion = _count(usage_in.get("completion_tokens"))
            text = _completion_text(payload, call.endpoint)
            if prompt is None or completion is None:
                # No engine here omits it; if one did, charge the most it can have used.
                prompt, completion = self.prompt_tokens, call.parsed.max_tokens or 0
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            out = {**payload, "id": self.request_id, "model": model.name, "usage": usage}
            out.setdefault("created", int(time.time()))
        # The books close just after the answer leaves, off its path (the hold covers the
        # request until then): a plain request waits for the engine, not for the ledger's rows.
        # They start once the lease is given back (_serve): begun here, their thread's ORM
        # work held the interpreter while the lease's release waited its turn (1.8 ms of 7).
        self.settled = True
        self.tokens_used = usage["prompt_tokens"] + usage["completion_tokens"]
        self.books = (usage, text)
        http = HttpResponse(json.dumps(out), content_type="application/json")
        http["X-Request-Id"] = self.request_id
        return http

    async def books_close(self) -> None:
        """A plain answer's log and finish, after it was sent."""
        await self._books_after(*self.books)

    async def _books_after(self, usage: dict, text: str) -> None:
        # The log (when the organisation opted in) before the finish: a request seen finished
        # has its log written.
        try:
            if self.call.caller.keeps_content:
                await db.detached(usage_services.request_log_record)(
                    request_id=self.request_id,
                    request_body=self.call.original_body,
                    response_text=text,
                )
        except Exception:
            logger.exception("request %s: could not keep its log", self.request_id)
        try:
            await db.detached(request_finish)(
                request_id=self.request_id,
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
            )
        except Exception:
            logger.exception("request %s: could not finish", self.request_id)

    # -- a stream

    async def stream(self, response: httpx.Response, target) -> HttpResponse:
        """Read the engine's stream up to its first event before answering: until then a
        broken or empty stream is still answered with an HTTP error (and a retry is no longer
        possible only once the client has a byte)."""
        call = self.call
        normaliser = StreamNormaliser(
            request_id=self.request_id,
            model_name=call.model.name,
            endpoint=call.endpoint,
            include_usage=call.parsed.include_usage,
            keep_text=call.caller.keeps_content,
        )
        lines = response.aiter_lines()
        first: list[bytes] = []
        try:
            while not first and not normaliser.over:
                try:
                    line = await lines.__anext__()
                except StopAsyncIteration:
                    first += normaliser.end()
                    break
                first += normaliser.feed(line)
        except BaseException as exc:
            await _shielded(self.close_failed())
            if isinstance(exc, httpx.HTTPError):
                raise errors.upstream_failed(call.model.name) from exc
            raise
        if not first and not normaliser.done:
            # Nothing came (llama.cpp's answer to an error inside a stream): nothing produced.
            await _shielded(self.close_failed())
            raise errors.upstream_failed(call.model.name)
        events = self._events(first, lines, normaliser)
        # A client that leaves between this answer and its first byte: Django drops the
        # response without ever starting the generator, whose `finally` then never runs.
        loop = asyncio.get_running_loop()
        weakref.finalize(events, self._abandoned, loop, normaliser)
        streaming = StreamingHttpResponse(events, content_type="text/event-stream")
        streaming["Cache-Control"] = "no-cache"
        streaming["X-Accel-Buffering"] = "no"
        streaming["X-Request-Id"] = self.request_id
        return streaming

    def _abandoned(self, loop, normaliser: StreamNormaliser) -> None:
        if self.started or self.closed or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.create_task, self._stream_closed(normaliser))

    async def _events(self, first: list[bytes], lines, normaliser: StreamNormaliser):
        self.started = True
        call = self.call
        broken = False
        try:
            for event in first:
                yield event
            while not normaliser.over:
                try:
                    line = await lines.__anext__()
                except StopAsyncIteration:
                    for event in normaliser.end():
                        yield event
                    break
                except httpx.HTTPError:
                    broken = True
                    break
                for event in normaliser.feed(line):
                    yield event
            broken = broken or not normaliser.done
            if not broken:
                # The engine's body ends right after [DONE]: read that end, so its connection
                # goes back to the pool rather than being closed.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_drain(lines), timeout=DRAIN_SECONDS)
            await self._upstream_close()
            usage = await self._stream_usage(normaliser)
            request = await self.finish(usage, error_code="upstream_error" if broken else "")
            if broken:
                logger.warning(
                    "request %s: replica %s ended its stream without [DONE]",
                    self.request_id,
                    self.target.replica_id,
                )
                yield errors.stream_broken(call.model.name).sse_event()
            elif call.playground:
                yield _playground_tail(self.request_id, usage, request.cost_microcredits)
            elif call.parsed.include_usage:
                yield normaliser.usage_event(usage)
            if not broken:
                await _log(call, self.request_id, normaliser.text)
            yield DONE
        finally:
            # Also when the client left (the task cancelled, or the generator closed): what
            # was produced so far is charged, the engine's connection closed (which stops
            # its generation), the lease given back.
            await _shielded(self._stream_closed(normaliser))

    async def _stream_closed(self, normaliser: StreamNormaliser) -> None:
        # The engine's connection first: closing it stops its generation (and llama.cpp,
        # which serves one request at a time, could not count the prompt before it stops).
        await self._upstream_close()
        if not self.settled:
            try:
                usage = await self._stream_usage(normaliser)
                await self.finish(usage, error_code="client_disconnected")
            except Exception:
                logger.exception("request %s: could not finish", self.request_id)
        await self.close()

    async def _stream_usage(self, normaliser: StreamNormaliser) -> dict:
        """The engine's usage, or one made here: the token chunks counted, and the prompt
        counted by the engine's tokenizer (the byte bound if the engine can no longer say)."""
        if normaliser.engine_usage is None and self.prompt_exact is None:
            if self.prompt_count is not None:
                with contextlib.suppress(Exception):
                    self.prompt_exact = await asyncio.wait_for(
                        asyncio.shield(self.prompt_count), timeout=PROMPT_COUNT_SECONDS
                    )
            if self.prompt_exact is None:
                self.prompt_exact = await _prompt_tokens_exact(self.call, self.target)
        prompt = self.prompt_exact if self.prompt_exact is not None else self.prompt_tokens
        return normaliser.usage(prompt_tokens=prompt)

    # -- the books and the clean-up

    async def finish(self, usage: dict, *, error_code: str = ""):
        request = await _finish(self.call, self.request_id, usage=usage, error_code=error_code)
        self.settled = True
        self.tokens_used = usage["prompt_tokens"] + usage["completion_tokens"]
        return request

    async def close_failed(self) -> None:
        """The request ends before anything was produced: nothing is charged."""
        if self.prompt_count is not None:
            self.prompt_count.cancel()
        if self.held and not self.settled:
            try:
                await _release(self.request_id, "upstream_error")
                self.settled = True
            except Exception:
                logger.exception("request %s: could not release its hold", self.request_id)
        await self.close()

    async def _upstream_close(self) -> None:
        if self.response is not None:
            response, self.response = self.response, None
            try:
                await response.aclose()
            finally:
                router.give_back(self.target)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._upstream_close()
        await self.lease_release()
        try:
            await limits.tokens_settle(admission=self.admission, tokens_used=self.tokens_used)
        except Exception:  # the window ends within a minute anyway
            logger.exception("request %s: could not give back its tokens", self.request_id)

    async def lease_release(self) -> None:
        if self.lease_released:
            return
        self.lease_released = True
        self.renewer.cancel()
        try:
            await limits.lease_release(self.lease)
        except Exception:  # the lease lapses by itself (LEASE_SECONDS)
            logger.exception("request %s: could not release its lease", self.request_id)


async def _lease_keep(lease) -> None:
    while True:
        await asyncio.sleep(limits.LEASE_RENEW_SECONDS)
        try:
            await limits.lease_renew(lease)
        except Exception:  # Redis away for a moment: the next renewal may do
            logger.warning("could not renew a lease", exc_info=True)


async def _drain(lines) -> None:
    async for _line in lines:
        pass


def _playground_tail(request_id: str, usage: dict, cost_microcredits: int) -> bytes:
    payload = {
        "usage": usage,
        "cost_credit_seconds": cost_credit_seconds(cost_microcredits),
        "request_id": request_id,
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _error_payload(response: httpx.Response):
    """An engine's error body (read up to a bound, then the connection closed)."""
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        pass
    finally:
        await response.aclose()
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None
