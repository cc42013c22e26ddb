"""ASGI around the portal for the gateway's sake (portal/asgi.py wraps its application in it):

- a body larger than LLM_MAX_REQUEST_BYTES on /llm/v1 or the playground's chat is refused with
  an OpenAI 413 before it is read in full. Django's handler reads a whole body before any view
  runs, so the check must sit in front of it: by Content-Length when the client sends one, else
  by counting as the body arrives;
- lifespan: at shutdown the gateway's shared HTTP client and Redis pool are closed (Django's
  handler does not speak lifespan; uvicorn then goes on without it, as before);
- /llm/v1 goes through a Django handler of its own (`ApiHandler`): the same URL resolution,
  views and signals, but only the middleware an API answered to bearer keys needs (the
  security headers). The browser's middleware (sessions, CSRF, locale, messages, allauth,
  WhiteNoise) cost a request about 3 ms, and three of them being sync-only, a thread hop each
  way; a key's request uses none of what they give.
"""

import json

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string

from . import limits, proxy, upstream

GATED_PREFIXES = ("/llm/v1/", "/models/playground/chat")
API_PREFIX = "/llm/v1/"
# What /llm/v1's answers get from the portal's middleware: HSTS, SSL redirect, nosniff,
# referrer and opener policy (SecurityMiddleware), DISALLOWED_USER_AGENTS (Common), framing
# refused (XFrameOptions) and the CSP header. In the order of settings.MIDDLEWARE.
API_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.core.middleware.ContentSecurityPolicyMiddleware",
)


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with API_MIDDLEWARE in place of settings.MIDDLEWARE, all async:
    an /llm/v1 request never leaves the event loop on its way to the view."""

    middleware = API_MIDDLEWARE

    def load_middleware(self, is_async=False):
        if not is_async:
            raise RuntimeError("ApiHandler serves ASGI only.")
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(self.middleware):
            factory = import_string(path)
            if not getattr(factory, "async_capable", False):
                raise RuntimeError(f"{path} must be async-capable to serve /llm/v1.")
            instance = factory(handler)
            # Only the request/response hooks are composed here; a middleware needing the
            # others (process_view, process_exception, template responses) does not belong.
            for hook in ("process_view", "process_exception", "process_template_response"):
                if hasattr(instance, hook):
                    raise RuntimeError(f"{path}.{hook} is not supported on /llm/v1.")
            if not iscoroutinefunction(instance):
                raise RuntimeError(f"{path} did not take its async form.")
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler


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


def gateway_asgi(app, *, api=None):
    """`app` with the gateway's body limit and shutdown; /llm/v1 served by `api` (an
    ApiHandler) when given, else by `app` too."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if not _gated(scope):
            await app(scope, receive, send)
            return
        target = api if api is not None and scope["path"].startswith(API_PREFIX) else app
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

        await target(scope, counted_receive, send)

    return wrapped
