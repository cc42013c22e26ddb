"""The HTTP client to the engines: one `httpx.AsyncClient` per process (per event loop), so
requests to a replica reuse pooled keep-alive connections; closed on shutdown (gateway.asgi).

Timeouts come from settings: LLM_UPSTREAM_CONNECT_TIMEOUT to connect, LLM_UPSTREAM_READ_TIMEOUT
between two bytes of an answer (an engine that queues requests, as llama.cpp does, answers the
first byte late: the read timeout allows for it).
"""

import asyncio
import weakref

import httpx
from django.conf import settings

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)


def client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    shared = _clients.get(loop)
    if shared is None or shared.is_closed:
        shared = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.LLM_UPSTREAM_CONNECT_TIMEOUT,
                read=settings.LLM_UPSTREAM_READ_TIMEOUT,
                write=settings.LLM_UPSTREAM_READ_TIMEOUT,
                pool=settings.LLM_UPSTREAM_READ_TIMEOUT,
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            # Engines are addressed by the portal's own records; never a proxy from the env.
            trust_env=False,
            follow_redirects=False,
        )
        _clients[loop] = shared
    return shared


async def client_close() -> None:
    loop = asyncio.get_running_loop()
    shared = _clients.pop(loop, None)
    if shared is not None:
        await shared.aclose()


def headers_for(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _root(base_url: str) -> str:
    """The engine's root from its OpenAI base URL (`http://host:port/v1` -> `http://host:port`)."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def chatml(messages: list[dict]) -> str:
    """The prompt a ChatML template makes of `messages` (the llama.cpp starter models' template),
    with the assistant's turn opened, as the engine renders it before tokenizing."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


async def tokens_count(
    *,
    engine: str,
    base_url: str,
    api_key: str,
    model: str,
    text: str | None = None,
    messages: list[dict] | None = None,
) -> int:
    """The engine's own count of a prompt's tokens (its tokenizer route, special tokens parsed):
    llama.cpp's /extras/tokenize/count, vLLM's /tokenize (which applies the model's own chat
    template to `messages`). For llama.cpp, `messages` are rendered with ChatML, the template of
    the models it serves here. Raises httpx.HTTPError or ValueError when it cannot say."""
    if engine == "vllm":
        body = {"model": model, **({"messages": messages} if messages else {"prompt": text})}
        url = f"{_root(base_url)}/tokenize"
    else:
        body = {"model": model, "input": chatml(messages) if messages else text}
        url = f"{_root(base_url)}/extras/tokenize/count"
    response = await client().post(url, json=body, headers=headers_for(api_key))
    response.raise_for_status()
    count = response.json().get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("no count")
    return count
