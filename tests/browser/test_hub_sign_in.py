"""Single sign-on into the hub in a real browser: the hub sends someone with no portal session to
the portal's authorisation endpoint; they sign in; Chromium must then follow the redirect chain
(sign-in form -> /o/authorize/ -> the hub's callback). Chromium applies CSP form-action to every
redirect after a form, so this only works because the portal's policy names the hub's origin.

The hub here is a stand-in HTTP server on another origin that records the callback it receives.
"""

import base64
import hashlib
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from oauth2_provider.models import Grant
from playwright.sync_api import Page

from portal.users.oidc import hub_client_ensure
from tests.factories import PASSWORD, UserFactory

CLIENT_ID = "hub-browser-client"
PASSWORD_FIELD = re.compile(r"^Password:?$")


class StandInHub:
    """An HTTP server on 127.0.0.1 (another origin than the live server) that records callbacks."""

    def __init__(self):
        self.callbacks: list[dict[str, list[str]]] = []
        self.received = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                # Only the callback counts: Chromium also asks this origin for /favicon.ico.
                if url.path == "/hub/oauth_callback":
                    hub.callbacks.append(parse_qs(url.query))
                    hub.received.set()
                body = b"<!DOCTYPE html><title>hub</title><p>callback received</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in_hub():
    hub = StandInHub()
    yield hub
    hub.close()


def _authorize_path(hub: StandInHub) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return "/o/authorize/?" + urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": f"{hub.origin}/hub/oauth_callback",
            "scope": "openid profile email",
            "state": "from-the-hub",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
    )


def _point_the_policy_at(settings, hub: StandInHub) -> None:
    """The policy settings build for HUB_PUBLIC_URL, built for the stand-in hub's origin."""
    configured = "{0.scheme}://{0.netloc}".format(urlsplit(settings.HUB_PUBLIC_URL))
    assert f"form-action 'self' {configured};" in settings.CONTENT_SECURITY_POLICY
    settings.CONTENT_SECURITY_POLICY = settings.CONTENT_SECURITY_POLICY.replace(
        configured, hub.origin
    )


def _sign_in_from_the_hub(page: Page, hub: StandInHub, email: str) -> None:
    hub_client_ensure(client_id=CLIENT_ID, client_secret="s" * 48, hub_public_url=hub.origin)
    page.goto(_authorize_path(hub))
    assert urlsplit(page.url).path == "/accounts/login/"
    page.get_by_label("Email").fill(email)
    page.get_by_label(PASSWORD_FIELD).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()


@pytest.mark.django_db(transaction=True)
def test_signing_in_on_the_way_to_the_hub_lands_on_the_hubs_callback(
    page: Page, stand_in_hub, settings
):
    # given a verified person with no portal session, and the policy the settings build
    user = UserFactory(email="sana@example.pk")
    _point_the_policy_at(settings, stand_in_hub)
    # when the hub sends them to the portal and they sign in
    _sign_in_from_the_hub(page, stand_in_hub, "sana@example.pk")
    # then the browser arrives at the hub's callback with a code for them and the hub's state
    assert stand_in_hub.received.wait(timeout=10), "the browser never reached the hub's callback"
    page.wait_for_url(f"{stand_in_hub.origin}/hub/oauth_callback?**")
    (callback,) = stand_in_hub.callbacks
    assert callback["state"] == ["from-the-hub"]
    assert Grant.objects.get(code=callback["code"][0]).user == user


@pytest.mark.django_db(transaction=True)
def test_without_the_hub_in_form_action_chromium_stops_before_the_callback(
    page: Page, stand_in_hub, settings
):
    # The control: the same flow under `form-action 'self'` alone never reaches the hub, which
    # is what the portal's policy did before it named the hub's origin.
    UserFactory(email="omar@example.pk")
    _point_the_policy_at(settings, stand_in_hub)
    settings.CONTENT_SECURITY_POLICY = settings.CONTENT_SECURITY_POLICY.replace(
        f"form-action 'self' {stand_in_hub.origin}", "form-action 'self'"
    )
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    _sign_in_from_the_hub(page, stand_in_hub, "omar@example.pk")
    page.wait_for_timeout(2000)
    assert not stand_in_hub.received.is_set()
    assert any("form-action" in text for text in violations), violations
