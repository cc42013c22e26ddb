"""/llm/v1 (OpenAI-compatible, bearer keys) and the playground's chat endpoint (session).

Async views: an open stream holds no thread. A request makes one thread hop to resolve the
key, the model and its replicas (callers.py), none when this process remembers them (a key
seen within seconds, under the keys' current generation), one to hold its cost and one to
finish it; the rest (limits in Redis, the engine) is awaited on the event loop.
"""

import json
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from inference.catalogue.models import ServedModel
from portal.apikeys.services import apikey_use_record
from portal.audit.services import client_ip

from . import callers, db, errors, limits, proxy
from .streaming import CHAT, COMPLETIONS
from .validation import body_parse, chat_parse, completion_parse, embedding_parse

logger = logging.getLogger(__name__)

PARSERS = {
    CHAT: chat_parse,
    COMPLETIONS: completion_parse,
    proxy.EMBEDDINGS: embedding_parse,
}
TASKS = {
    CHAT: ServedModel.Task.CHAT,
    COMPLETIONS: ServedModel.Task.CHAT,
    proxy.EMBEDDINGS: ServedModel.Task.EMBEDDING,
}


def _bearer(request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise errors.key_missing()
    return raw.strip()


def _body(request) -> dict:
    # The ASGI layer (gateway.asgi) refuses a larger body before reading it all; this guards
    # any other way in (a WSGI server, the test client).
    if len(request.body) > settings.LLM_MAX_REQUEST_BYTES:
        raise errors.body_too_large(settings.LLM_MAX_REQUEST_BYTES)
    return body_parse(request.body)


def _method(request, allowed: str) -> None:
    if request.method != allowed:
        raise errors.GatewayError(
            405,
            f"Use {allowed} for this route.",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )


def _model_out(model: ServedModel) -> dict:
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "programme",
    }


async def _prepare(request, raw_key: str, name: str, task: str):
    """The caller, the model and its replicas: from what this process remembers when it may
    (no thread hop, no query), else read from the database and remembered."""
    epoch = await limits.keys_epoch()
    caller, use_due = callers.caller_known(raw=raw_key, epoch=epoch)
    if caller is not None:
        if use_due:  # last_used_at, at most once a minute, off the request's path
            proxy.background(
                db.detached(apikey_use_record)(
                    key_pk=caller.api_key.pk, ip=client_ip(request), now=timezone.now()
                )
            )
        known = callers.model_known(caller=caller, name=name, task=task)
        if known is not None:
            return caller, *known
        model, targets = await sync_to_async(callers.model_for)(caller=caller, name=name, task=task)
        return caller, model, targets
    return await sync_to_async(callers.prepare_for_key)(
        raw=raw_key, ip=client_ip(request), name=name, task=task, epoch=epoch
    )


async def _invoke(request, endpoint: str) -> HttpResponse:
    try:
        _method(request, "POST")
        raw_key = _bearer(request)
        body = _body(request)
        parsed = PARSERS[endpoint](body)
        caller, model, targets = await _prepare(request, raw_key, parsed.model, TASKS[endpoint])
    except errors.GatewayError as exc:
        return exc.response()
    except Exception:
        logger.exception("%s: the gateway failed before the model was called", endpoint)
        return errors.internal().response()
    return await proxy.serve(
        proxy.Call(
            caller=caller,
            model=model,
            targets=targets,
            endpoint=endpoint,
            parsed=parsed,
            original_body=body,
        )
    )


@csrf_exempt
async def chat_completions(request):
    return await _invoke(request, CHAT)


@csrf_exempt
async def completions(request):
    return await _invoke(request, COMPLETIONS)


@csrf_exempt
async def embeddings(request):
    return await _invoke(request, proxy.EMBEDDINGS)


@csrf_exempt
async def models_list(request):
    try:
        _method(request, "GET")
        models = await sync_to_async(callers.models_for_key)(
            raw=_bearer(request), ip=client_ip(request)
        )
    except errors.GatewayError as exc:
        return exc.response()
    payload = {"object": "list", "data": [_model_out(m) for m in models]}
    return HttpResponse(json.dumps(payload), content_type="application/json")


@csrf_exempt
async def model_detail(request, name: str):
    try:
        _method(request, "GET")
        models = await sync_to_async(callers.models_for_key)(
            raw=_bearer(request), ip=client_ip(request)
        )
        model = next((m for m in models if m.name == name), None)
        if model is None:
            raise errors.model_not_found(name)
    except errors.GatewayError as exc:
        return exc.response()
    return HttpResponse(json.dumps(_model_out(model)), content_type="application/json")


@csrf_exempt
async def not_found(request, rest: str = ""):
    return errors.GatewayError(
        404, f"Unknown route: {request.method} {request.path}.", code="unknown_url"
    ).response()


# --- The playground ----------------------------------------------------------------------------


async def playground_chat(request):
    """The playground page's chat: the signed-in person's session (CSRF checked by the
    middleware), paid from their own account or the organisation they pick; always streamed,
    ending with an event of the usage, the cost and the request id."""
    try:
        _method(request, "POST")
        user = await request.auser()
        if not user.is_authenticated:
            raise errors.GatewayError(401, "Sign in to use the playground.", code="not_signed_in")
        body = _body(request)
        organisation = body.pop("organisation", None)
        if organisation is not None and not isinstance(organisation, str):
            raise errors.invalid_request("'organisation' must be an id.", param="organisation")
        body["stream"] = True
        parsed = chat_parse(body)
        caller, model, targets = await sync_to_async(callers.prepare_for_person)(
            user=user,
            organisation_public_id=organisation,
            name=parsed.model,
            task=ServedModel.Task.CHAT,
        )
    except errors.GatewayError as exc:
        return exc.response()
    except ValueError:  # a malformed organisation id
        return errors.GatewayError(
            404, "No such organisation.", param="organisation", code="not_found"
        ).response()
    return await proxy.serve(
        proxy.Call(
            caller=caller,
            model=model,
            targets=targets,
            endpoint=CHAT,
            parsed=parsed,
            original_body=body,
            playground=True,
        )
    )
