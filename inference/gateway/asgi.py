"""ASGI around the portal for the gateway's sake (portal/asgi.py wraps its application in it):

- a body larger than LLM_MAX_REQUEST_BYTES on /llm/v1 or the playground's chat is refused with
  an OpenAI 413 before it is read in full. Django's handler reads a whole body before any view
  runs, so the check must sit in front of it: by Content-Length when the client sends one, else
  by counting as the body arrives;
- lifespan: at shutdown the gateway's shared HTTP client and Redis pool are closed (Django's
  handler does not speak lifespan; uvicorn then goes on without it, as before).
"""

import json

from django.conf import settings

from . import limits, proxy, upstream

GATED_PREFIXES = ("/llm/v1/", "/models/playground/chat")


def _gated(scope) -> bool:
    return scope["type"] == "http" and scope["path"].startswith(GATED_PREFIXES)


def _refusal(limit: int) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": f"The request body is larger than {limit} bytes.",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large",
            }
        }
    ).encode()


async def _refuse(send, limit: int) -> None:
    body = _refusal(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await proxy.books_drain()
                await upstream.client_close()
                await limits.redis_close()
            finally:
                await send({"type": "lifespan.shutdown.complete"})
            return


def gateway_asgi(app):
    """`app` with the gateway's body limit and shutdown."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if not _gated(scope):
            await app(scope, receive, send)
            return
        limit = settings.LLM_MAX_REQUEST_BYTES
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit or declared < 0:
                    await _refuse(send, limit)
                    return
        received = 0
        refused = False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now and tell Django the client left: it stops reading and drops
                    # the request without running a view.
                    refused = True
                    await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        await app(scope, counted_receive, send)

    return wrapped
