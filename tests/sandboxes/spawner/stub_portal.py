"""A small real HTTP server standing in for the portal's internal hub API (the spawner's boundary).

The hub tests control what the "portal" answers per server name and see what the hub sent.
The lead's end-to-end tests use the real portal instead.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Call:
    path: str
    authorization: str
    body: dict


class StubPortal:
    SPAWN_SPEC = "/internal/hub/spawn-spec/"
    SERVER_STOPPED = "/internal/hub/server-stopped/"

    def __init__(self) -> None:
        self.secret = secrets.token_urlsafe(24)
        self.calls: list[Call] = []
        # server name -> list of (status, json body); the last one repeats
        self._answers: dict[str, list[tuple[int, dict]]] = {}
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                status, payload = stub._handle(
                    self.path, self.headers.get("Authorization", ""), body
                )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StubPortal:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, server_name: str, *responses: tuple[int, dict]) -> None:
        """What spawn-spec answers for this server: one (status, body) per call, last repeats."""
        with self._lock:
            self._answers[server_name] = list(responses)

    def _handle(self, path: str, authorization: str, body: dict) -> tuple[int, dict | None]:
        with self._lock:
            self.calls.append(Call(path, authorization, body))
            if authorization != f"Bearer {self.secret}":
                return 401, {"detail": "Invalid spawn secret."}
            if path == self.SERVER_STOPPED:
                return 204, None
            if path != self.SPAWN_SPEC:
                return 404, {"detail": "Not found."}
            answers = self._answers.get(body.get("server_name"), [])
            if not answers:
                return 403, {"detail": "This server was not launched from the portal."}
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def calls_for(self, path: str, server_name: str) -> list[Call]:
        with self._lock:
            return [
                c for c in self.calls if c.path == path and c.body.get("server_name") == server_name
            ]

    def wait_for(self, path: str, server_name: str, timeout: float = 15) -> list[Call]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.calls_for(path, server_name)
            if calls:
                return calls
            time.sleep(0.1)
        return []


def spec(
    *,
    user: str,
    image: str,
    gpu_uuids: list[str] | None = None,
    egress: str = "open",
    cpu_limit: float = 1.5,
    mem_limit_bytes: int = 1 << 30,
    shm_size_bytes: int = 256 << 20,
    pids_limit: int = 512,
    sandbox: str | None = None,
) -> dict:
    """A contract-shaped spawn spec."""
    sandbox = sandbox or f"00000000-0000-4000-8000-{secrets.token_hex(6)}"
    return {
        "version": 1,
        "sandbox": sandbox,
        "image": image,
        "cpu_limit": cpu_limit,
        "mem_limit_bytes": mem_limit_bytes,
        "shm_size_bytes": shm_size_bytes,
        "pids_limit": pids_limit,
        "gpu_uuids": gpu_uuids or [],
        "volume": f"nac-home-{user}",
        "egress": egress,
        "environment": {"NAC_SANDBOX_ID": sandbox},
        "labels": {"nac.sandbox": sandbox, "nac.user": user},
    }
