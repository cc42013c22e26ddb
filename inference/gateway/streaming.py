"""An engine's SSE stream, read line by line and re-emitted in OpenAI's form.

What it normalises (MODELS.md §7-8):
- ids and names: every chunk carries the gateway's request id and the catalogue's model name
  (llama.cpp echoes whatever name it was sent, and its own ids);
- usage: the gateway always asks the engine for it (`stream_options.include_usage`). vLLM then
  sends a last chunk with `choices: []` and `usage`; llama.cpp never does. The usage chunk goes
  to the client only if the client asked for it; when the engine sent none, the usage is made
  here from the count of token chunks (llama.cpp sends one chunk per generated token, some with
  an empty `content` while a multi-byte character is held back; the role chunk and the last,
  empty chunk with `finish_reason` are not tokens) and the prompt's count;
- the end: a stream is whole only when `data: [DONE]` arrives. An error event (vLLM) or a stream
  that just stops (llama.cpp on an error, an engine that died) is an upstream failure: the
  client gets an OpenAI error event from the gateway, and pays only for what was produced.
"""

import json
import time

CHAT = "chat.completions"
COMPLETIONS = "completions"


class StreamNormaliser:
    """Feed it the engine's lines (`feed`); it returns the bytes to send to the client."""

    def __init__(
        self,
        *,
        request_id: str,
        model_name: str,
        endpoint: str,
        include_usage: bool,
        keep_text: bool = False,
    ) -> None:
        self.request_id = request_id
        self.model_name = model_name
        self.endpoint = endpoint
        self.include_usage = include_usage
        self.keep_text = keep_text
        self.text_parts: list[str] = []
        self.data_lines: list[str] = []
        self.done = False  # [DONE] arrived
        self.failed = False  # an error event, or a line that is not an event
        self.engine_usage: dict | None = None
        self.token_chunks = 0
        self.chunks_forwarded = 0
        self.created: int | None = None

    @property
    def over(self) -> bool:
        return self.done or self.failed

    def feed(self, line: str) -> list[bytes]:
        """One line of the engine's stream (without its newline)."""
        if self.over:
            return []
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return []  # a comment: sse-starlette's pings
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data_lines.append(value)
        return []  # event:, id:, retry: are not used by these engines

    def end(self) -> list[bytes]:
        """The engine's stream ended: flush a last event that had no blank line after it."""
        return self._dispatch() if self.data_lines and not self.over else []

    def _dispatch(self) -> list[bytes]:
        if not self.data_lines:
            return []
        data = "\n".join(self.data_lines)
        self.data_lines = []
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            self.failed = True
            return []
        if not isinstance(chunk, dict) or chunk.get("error") is not None:
            self.failed = True
            return []
        usage = chunk.pop("usage", None)
        if isinstance(usage, dict):
            # continuous_usage_stats sends a running total on every chunk: the last one wins.
            self.engine_usage = usage
        choices = chunk.get("choices")
        if not choices:
            return []  # the engine's usage chunk: the gateway sends its own at the end
        self._count(choices)
        if isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        chunk["id"] = self.request_id
        chunk["model"] = self.model_name
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI sends on every chunk but the last
        self.chunks_forwarded += 1
        return [_event(chunk)]

    def _count(self, choices: list) -> None:
        first = choices[0] if isinstance(choices[0], dict) else {}
        if self.endpoint == CHAT:
            delta = first.get("delta") or {}
            text = delta.get("content")
        else:
            text = first.get("text")
            # The last chunk of a completion carries the finish reason and no token.
            if first.get("finish_reason") and not text:
                text = None
        if isinstance(text, str):
            self.token_chunks += 1
            if self.keep_text:
                self.text_parts.append(text)

    def usage(self, *, prompt_tokens: int) -> dict:
        """The request's usage: the engine's when it sent it, else made from the counts."""
        if self.engine_usage is not None:
            prompt = self.engine_usage.get("prompt_tokens")
            completion = self.engine_usage.get("completion_tokens")
            if _is_count(prompt) and _is_count(completion):
                return _usage(prompt, completion)
        return _usage(prompt_tokens, self.token_chunks)

    def usage_event(self, usage: dict) -> bytes:
        chunk = {
            "id": self.request_id,
            "object": "chat.completion.chunk" if self.endpoint == CHAT else "text_completion",
            "created": self.created or int(time.time()),
            "model": self.model_name,
            "choices": [],
            "usage": usage,
        }
        return _event(chunk)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _usage(prompt: int, completion: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
