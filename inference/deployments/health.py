"""The health probe of one engine: `GET {base_url}/models` with its key, a short timeout.

Blocking I/O: called from Celery tasks and sync services, never from an event loop."""

from __future__ import annotations

import httpx

PROBE_TIMEOUT_SECONDS = 3.0


def engine_probe(*, base_url: str, api_key: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str:
    """'' when the engine answers its model list with 200 and a JSON list, else why not.

    Only the status and a small JSON body are read; redirects are not followed (an engine
    never redirects, and a redirect must not send its key elsewhere)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            response = client.get(base_url.rstrip("/") + "/models", headers=headers)
    except httpx.HTTPError as exc:
        return f"no answer: {type(exc).__name__}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return "no model list"
    return ""
