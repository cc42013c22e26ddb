"""The request bodies the gateway accepts, checked here and rebuilt for the engine.

The engine never sees the client's body as sent: only the fields below, with their types
checked, are copied into a fresh body. An engine's own validation answers 500 with internal text
(llama.cpp, MODELS.md §7), so nothing may reach it that it could refuse. A field OpenAI defines
that the engines here cannot honour (n > 1, tools, logprobs, dimensions) is refused with a clear
400 rather than silently ignored; an unknown field is refused as OpenAI does.
"""

import json
from dataclasses import dataclass, field

from .errors import GatewayError, invalid_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP_SEQUENCES = 4
MAX_EMBEDDING_INPUTS = 2048
# Chat template tokens around each message, bounded generously (ChatML: <|im_start|>, the role,
# a newline, <|im_end|>, a newline; the role may be several tokens in a small vocabulary).
TEMPLATE_TOKENS_PER_MESSAGE = 6
TEMPLATE_TOKENS_PER_PROMPT = 12


@dataclass
class ParsedRequest:
    """A checked request: what the engine will be sent (`upstream`, less `model`, `stream` and
    `max_tokens`, which the gateway sets), and what the gateway needs to know of it."""

    model: str
    stream: bool
    include_usage: bool  # the client asked for the usage chunk (stream_options.include_usage)
    max_tokens: int | None
    upstream: dict
    prompt_texts: list[str] = field(default_factory=list)  # for counting tokens only
    prompt_tokens_bound: int = 0  # no prompt can have more tokens than this
    encoding_format: str = "float"  # embeddings

    @property
    def input_count(self) -> int:
        return len(self.prompt_texts)


def body_parse(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_request(
            "We could not parse the JSON body of your request. Send a JSON object."
        ) from exc
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def _wrong(name: str, what: str) -> GatewayError:
    return invalid_request(f"'{name}' must be {what}.", param=name)


def _number(body: dict, name: str, low: float, high: float):
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _wrong(name, f"a number from {low:g} to {high:g}")
    return value


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid_request("You must provide a model parameter.", param="model")
    if len(model) > 100:
        raise _wrong("model", "a model's name")
    return model


def _unknown(body: dict, allowed: frozenset[str], refused: frozenset[str]) -> None:
    for name in body:
        if name in refused:
            raise invalid_request(
                f"'{name}' is not supported by this model API.", param=name, code="unsupported"
            )
        if name not in allowed:
            raise invalid_request(f"Unrecognized request argument supplied: {name}", param=name)


def _stream(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong("stream", "true or false")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid_request(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _wrong("stream_options", 'an object like {"include_usage": true}')
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _wrong("stream_options.include_usage", "true or false")
    return stream, include_usage


def _max_tokens(body: dict) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if "max_completion_tokens" in body and "max_tokens" in body:
        raise invalid_request(
            "Send 'max_tokens' or 'max_completion_tokens', not both.", param="max_tokens"
        )
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        raise _wrong(name, "an integer of at least 1")
    return value


def _sampling(body: dict) -> dict:
    """The sampling fields both text endpoints share, checked; only those that were sent."""
    out = {}
    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        value = _number(body, name, low, high)
        if value is not None:
            out[name] = value
    if body.get("seed") is not None:
        if not _is_int(body["seed"]) or not -(2**63) <= body["seed"] < 2**63:
            raise _wrong("seed", "an integer")
        out["seed"] = body["seed"]
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise invalid_request("Only n=1 is supported.", param="n", code="unsupported")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if (
            not isinstance(stop, list)
            or len(stop) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stop)
        ):
            raise _wrong("stop", f"a string or a list of up to {MAX_STOP_SEQUENCES} strings")
        out["stop"] = stop
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _wrong("user", "a string")
    return out


def _byte_bound(text: str) -> int:
    # Every engine tokenizer here spends at least one byte of UTF-8 per token (byte-level BPE,
    # SentencePiece with byte fallback, WordPiece), so the byte length bounds the count.
    return len(text.encode("utf-8"))


def _content_text(message: dict, index: int) -> str:
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid_request(
                    "Only text content parts are supported.",
                    param=f"messages.[{index}].content",
                    code="unsupported",
                )
            if not isinstance(part.get("text"), str):
                raise _wrong(f"messages.[{index}].content.text", "a string")
            parts.append(part["text"])
        return "".join(parts)
    raise _wrong(f"messages.[{index}].content", "a string or a list of text parts")


CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "n",
        "stop",
        "user",
    }
)
CHAT_REFUSED = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "response_format",
        "audio",
        "modalities",
        "prediction",
        "parallel_tool_calls",
    }
)


def chat_parse(body: dict) -> ParsedRequest:
    _unknown(body, CHAT_FIELDS, CHAT_REFUSED)
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' must be a non-empty list.", param="messages")
    clean, texts, bound = [], [], TEMPLATE_TOKENS_PER_PROMPT
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _wrong(f"messages.[{index}]", "an object")
        role = message.get("role")
        if role not in ROLES:
            raise invalid_request(
                f"'messages.[{index}].role' must be one of: {', '.join(sorted(ROLES))}.",
                param=f"messages.[{index}].role",
            )
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise invalid_request(
                f"'messages.[{index}]' has fields this API does not support: "
                f"{', '.join(sorted(extra))}.",
                param=f"messages.[{index}]",
                code="unsupported",
            )
        if message.get("name") is not None and not isinstance(message["name"], str):
            raise _wrong(f"messages.[{index}].name", "a string")
        text = _content_text(message, index)
        clean.append({"role": "system" if role == "developer" else role, "content": text})
        texts.append(text)
        bound += _byte_bound(text) + _byte_bound(role) + TEMPLATE_TOKENS_PER_MESSAGE
    stream, include_usage = _stream(body)
    return ParsedRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=_max_tokens(body),
        upstream={"messages": clean, **_sampling(body)},
        prompt_texts=texts,
        prompt_tokens_bound=bound,
    )


COMPLETION_FIELDS = CHAT_FIELDS - {"messages", "max_completion_tokens"} | {"prompt"}
COMPLETION_REFUSED = frozenset({"logprobs", "logit_bias", "echo", "suffix", "best_of"})


def completion_parse(body: dict) -> ParsedRequest:
    _unknown(body, COMPLETION_FIELDS, COMPLETION_REFUSED)
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid_request(
            "'prompt' must be a non-empty string (one prompt per request).", param="prompt"
        )
    stream, include_usage = _stream(body)
    return ParsedRequest(
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=_max_tokens(body),
        upstream={"prompt": prompt, **_sampling(body)},
        prompt_texts=[prompt],
        prompt_tokens_bound=_byte_bound(prompt) + 2,
    )


EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "user"})
EMBEDDING_REFUSED = frozenset({"dimensions"})


def embedding_parse(body: dict) -> ParsedRequest:
    _unknown(body, EMBEDDING_FIELDS, EMBEDDING_REFUSED)
    model = _model(body)
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if (
        not isinstance(inputs, list)
        or not inputs
        or len(inputs) > MAX_EMBEDDING_INPUTS
        or not all(isinstance(text, str) and text for text in inputs)
    ):
        raise invalid_request(
            f"'input' must be a non-empty string or a list of 1 to {MAX_EMBEDDING_INPUTS} "
            "non-empty strings (token arrays are not supported).",
            param="input",
        )
    encoding = body.get("encoding_format", "float")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise _wrong("encoding_format", "'float' or 'base64'")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _wrong("user", "a string")
    return ParsedRequest(
        model=model,
        stream=False,
        include_usage=False,
        max_tokens=None,
        upstream={"input": inputs},
        prompt_texts=inputs,
        # [CLS] and [SEP] around each input.
        prompt_tokens_bound=sum(_byte_bound(text) + 2 for text in inputs),
        encoding_format=encoding,
    )
