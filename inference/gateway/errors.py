"""OpenAI's error shape, for every answer the gateway gives that is not a success.

`{"error": {"message", "type", "param", "code"}}` with the HTTP status OpenAI uses. The messages
are the gateway's own: an engine's message is never passed through (llama.cpp's validation
errors carry pydantic text and file paths), only mapped to one of ours by status and code.
"""

import json
from dataclasses import dataclass, field

from django.http import HttpResponse


@dataclass
class GatewayError(Exception):
    """A request the gateway answers with an OpenAI error."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code or self.type}"

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> HttpResponse:
        response = HttpResponse(
            json.dumps(self.body()), status=self.status, content_type="application/json"
        )
        for name, value in self.headers.items():
            response[name] = value
        return response

    def sse_event(self) -> bytes:
        """The same error as an event inside a stream that has already begun (how OpenAI and
        vLLM report a failure after the 200)."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def invalid_request(message: str, *, param: str | None = None, code: str | None = None):
    return GatewayError(400, message, param=param, code=code)


def key_missing() -> GatewayError:
    return GatewayError(
        401,
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def key_invalid() -> GatewayError:
    # The same answer for malformed, unknown, revoked and expired keys.
    return GatewayError(401, "Invalid or expired API key.", code="invalid_api_key")


def scope_missing() -> GatewayError:
    return GatewayError(
        403,
        "This key may not call models: it lacks the scope models:invoke.",
        type="permission_error",
        code="insufficient_permissions",
    )


def model_not_found(name: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def model_wrong_task(name: str, endpoint: str) -> GatewayError:
    return GatewayError(
        400,
        f"The model '{name}' does not serve {endpoint}.",
        param="model",
        code="model_not_supported",
    )


def context_length_exceeded(*, context_length: int, prompt_tokens: int, max_tokens: int):
    return GatewayError(
        400,
        f"This model's maximum context length is {context_length} tokens. However, you "
        f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
        f"{max_tokens} for the completion). Please reduce the prompt or max_tokens.",
        param="max_tokens" if max_tokens else "messages",
        code="context_length_exceeded",
    )


def rate_limited(message: str, *, retry_after: int) -> GatewayError:
    return GatewayError(
        429,
        message,
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, int(retry_after)))},
    )


def insufficient_quota() -> GatewayError:
    return GatewayError(
        429,
        "You exceeded your current quota: the account's credits cannot cover this request's "
        "maximum cost (prompt + max_tokens). Lower max_tokens or add credits.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


def no_replica(name: str) -> GatewayError:
    return GatewayError(
        503,
        f"The model '{name}' has no replica up right now. Try again in a minute.",
        type="server_error",
        code="model_unavailable",
        headers={"Retry-After": "10"},
    )


def internal() -> GatewayError:
    return GatewayError(
        500,
        "The model API failed to handle this request. Nothing was charged for it.",
        type="server_error",
        code="internal_error",
    )


def upstream_failed(name: str) -> GatewayError:
    return GatewayError(
        502,
        f"The model '{name}' failed to answer. Nothing was charged for what it did not produce.",
        type="server_error",
        code="upstream_error",
    )


def upstream_timeout(name: str) -> GatewayError:
    return GatewayError(
        504, f"The model '{name}' took too long to answer.", type="server_error", code="timeout"
    )


def stream_broken(name: str) -> GatewayError:
    return GatewayError(
        502,
        f"The model '{name}' stopped in the middle of its answer. You are charged only for the "
        "tokens it produced.",
        type="server_error",
        code="upstream_error",
    )


# What an engine's error means, by status, in our words (vLLM's and llama.cpp's bodies differ
# and their messages are not for users: MODELS.md §7-8).
_UPSTREAM_BY_STATUS = {
    400: ("invalid_request_error", None, "The model refused the request's parameters."),
    404: ("invalid_request_error", "model_not_found", "The model is not loaded on its replica."),
    413: ("invalid_request_error", "request_too_large", "The request is too large for the model."),
    422: ("invalid_request_error", None, "The model refused the request's parameters."),
    429: ("requests", "rate_limit_exceeded", "The model is overloaded. Try again shortly."),
}


def upstream_error_code(payload) -> str | None:
    """The `code` an engine put on its error, whichever of the shapes it used: OpenAI's and
    vLLM's new nested `{"error": {...}}`, vLLM's old flat `{"object": "error", ...}`, FastAPI's
    `{"detail": ...}`. Only a string code is kept (vLLM puts the HTTP status there)."""
    if not isinstance(payload, dict):
        return None
    inner = payload.get("error") if isinstance(payload.get("error"), dict) else payload
    code = inner.get("code")
    if isinstance(code, str) and code:
        return code
    message = inner.get("message") or payload.get("detail")
    if isinstance(message, str) and "context length" in message.lower():
        return "context_length_exceeded"
    return None


def upstream_error(*, status: int, payload, model_name: str, context_length: int) -> GatewayError:
    """An engine's 4xx answer in OpenAI's shape with the gateway's own message."""
    code = upstream_error_code(payload)
    if code == "context_length_exceeded":
        return GatewayError(
            400,
            f"This model's maximum context length is {context_length} tokens; the prompt and "
            "max_tokens together exceed it.",
            param="messages",
            code="context_length_exceeded",
        )
    kind, default_code, message = _UPSTREAM_BY_STATUS.get(
        status, ("invalid_request_error", None, "The model refused the request.")
    )
    return GatewayError(
        status if status in _UPSTREAM_BY_STATUS else 400, message, kind, default_code
    )
