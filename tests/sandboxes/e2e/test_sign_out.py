"""Signing out of the portal ends the hub login too, even while a sandbox keeps running: the hub
re-checks the portal's tokens of each login once it is HUB_AUTH_REFRESH_AGE old, and sign-out
revoked them. (Before, the hub's login cookie outlived the portal session for as long as the
person had a server: JupyterHub voids it only when the hub user is deleted.)"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from sandboxes.launcher.models import Sandbox
from tests.browser.conftest import chromium
from tests.factories import PASSWORD
from tests.sandboxes.launcher.helpers import funded_student
from tests.sandboxes.launcher.test_api import client_for

from .conftest import hub_sign_in_allowed
from .test_sandbox_lifecycle import API, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

REFRESH_AGE = 3


@pytest.fixture
def hub_env() -> dict[str, str]:
    return {"HUB_AUTH_REFRESH_AGE": str(REFRESH_AGE)}


def test_signing_out_of_the_portal_ends_the_hub_login_while_the_sandbox_runs(
    stack, portal_server, settings, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls beside Playwright's loop
    hub_sign_in_allowed(stack, settings)
    # given a student with a running sandbox
    student = funded_student()
    launched = client_for(student).post(
        f"{API}/sandboxes", {"image": "python-cpu", "profile": "cpu-small"}, format="json"
    )
    assert launched.status_code == 202, launched.json()
    running = wait_for(client_for(student), launched.json()["id"], {"running", "failed"}, stack)
    assert running["status"] == "running", running["message"]
    server = Sandbox.objects.get(public_id=running["id"])
    server_url = stack.server_url(student.hub_username, server.server_name)
    hub_home = f"{stack.public_url}/hub/home"
    portal_login = re.compile(rf"^{re.escape(portal_server.url)}/accounts/login/")

    with chromium() as browser:
        context = browser.new_context(base_url=portal_server.url, locale="en-GB")
        context.set_default_timeout(30_000)
        page = context.new_page()
        # who signed in to the portal and opened their sandbox (single sign-on into the hub)
        page.goto("/accounts/login/")
        page.get_by_label("Email").fill(student.email)
        page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
        page.get_by_role("button", name="Sign In").click()
        page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))
        page.goto(running["url"])
        page.wait_for_url(re.compile(rf"^{re.escape(server_url)}lab"), timeout=60_000)
        expect(page).to_have_title(re.compile("JupyterLab"), timeout=60_000)
        # and whose hub login works, past the refresh age too (the portal vouches again)
        time.sleep(REFRESH_AGE + 1)
        page.goto(hub_home)
        assert page.url.startswith(hub_home), page.url
        assert "jupyterhub-hub-login" in {c["name"] for c in context.cookies()}

        # when they sign out of the portal, and come back to the hub once the login is old
        page.goto("/")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r"^(?!.*/accounts/logout/).*$"))
        time.sleep(REFRESH_AGE + 1)
        page.goto(hub_home)

        # then the hub no longer knows them: it sends them to sign in to the portal again
        page.wait_for_url(portal_login)
        context.close()

    # and the sandbox itself was not touched: signing out is not stopping
    server.refresh_from_db()
    assert server.status == Sandbox.Status.RUNNING
