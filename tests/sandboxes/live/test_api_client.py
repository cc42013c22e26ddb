"""What an API client sees: the portal under a real ASGI server (uvicorn) and the `websockets`
client library, which sends no Origin. Close codes travel to the client; an Origin refusal is
an HTTP 403 at the handshake."""

import threading
import time

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from portal.apikeys.services import apikey_create
from sandboxes.live.broadcast import send_after_commit, user_group
from tests.factories import UserFactory
from tests.sandboxes.hub import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def portal_ws():
    """ws://… of the portal's ASGI application under uvicorn, in a thread of this process."""
    import uvicorn

    from portal.asgi import application

    port = free_port()
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"ws://127.0.0.1:{port}"
    # A socket's consumer can take some seconds to stop (channels-redis finishes its blocking
    # read of the channel first): wait for it, so no server thread outlives its test.
    server.should_exit = True
    thread.join(timeout=20)
    if thread.is_alive():
        server.force_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive(), "uvicorn did not stop"


def key_for(user, scopes) -> dict:
    _key, full_key = apikey_create(name="script", scopes=scopes, acting_user=user, user=user)
    return {"Authorization": f"Bearer {full_key}"}


def test_a_script_with_a_key_and_no_origin_receives_its_stream(portal_ws):
    user = UserFactory()
    with connect(f"{portal_ws}/ws/live/", additional_headers=key_for(user, ["usage:read"])) as ws:
        send_after_commit(
            [(user_group(user.pk), {"type": "credits.balance", "runway_seconds": 60})]
        )
        assert ws.recv(timeout=5) == '{"type": "credits.balance", "v": 1, "runway_seconds": 60}'


def close_code(url: str, headers: dict) -> int:
    with connect(url, additional_headers=headers) as ws, pytest.raises(ConnectionClosedError) as e:
        ws.recv(timeout=5)
    return e.value.rcvd.code


def test_a_script_is_told_why_it_is_refused(portal_ws):
    user = UserFactory()
    url = f"{portal_ws}/ws/live/"
    assert close_code(url, key_for(user, ["sandboxes:read"])) == 4403  # not this scope
    assert close_code(url, {"Authorization": "Bearer x"}) == 4401  # no such key


def test_a_foreign_origin_is_refused_at_the_handshake_even_with_a_key(portal_ws):
    user = UserFactory()
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"{portal_ws}/ws/live/",
            origin="https://evil.example",
            additional_headers=key_for(user, ["usage:read"]),
        )
    assert refused.value.response.status_code == 403
