"""Signing out of the portal ends the hub login too, even while a sandbox keeps running: the hub
re-checks the portal's tokens of each login once it is HUB_AUTH_REFRESH_AGE old, and sign-out
revoked them. (Before, the hub's login cookie outlived the portal session for as long as the
person had a server: JupyterHub voids it only when the hub user is deleted.)"""

from __future__ import annotations

import re
import time

import pytest

from sandboxes.launcher.models import Sandbox
from tests.browser.conftest import chromium
from tests.sandboxes.launcher.helpers import funded_student

from .conftest import hub_sign_in_allowed
from .journeys import sandbox_running, signed_in_to_sandbox

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
    running, server, server_url = sandbox_running(stack, student)
    hub_home = f"{stack.public_url}/hub/home"
    portal_login = re.compile(rf"^{re.escape(portal_server.url)}/accounts/login/")

    with chromium() as browser:
        context = browser.new_context(base_url=portal_server.url, locale="en-GB")
        context.set_default_timeout(30_000)
        page = context.new_page()
        # who signed in to the portal and opened their sandbox (single sign-on into the hub)
        signed_in_to_sandbox(page, student, running, server_url)
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
