"""Steps several end-to-end tests take the same way: a person's sandbox running through the API,
and that person signed in to the portal in the browser and landed in its JupyterLab."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from sandboxes.launcher.models import Sandbox
from tests.factories import PASSWORD
from tests.sandboxes.launcher.test_api import client_for

from .test_sandbox_lifecycle import API, wait_for


def sandbox_running(stack, owner) -> tuple[dict, Sandbox, str]:
    """Launch a CPU sandbox for `owner` through the API and wait until it runs: the API's
    answer, the sandbox, and its server's URL (a real container behind the real proxy)."""
    launched = client_for(owner).post(
        f"{API}/sandboxes", {"image": "python-cpu", "profile": "cpu-small"}, format="json"
    )
    assert launched.status_code == 202, launched.json()
    running = wait_for(client_for(owner), launched.json()["id"], {"running", "failed"}, stack)
    assert running["status"] == "running", running["message"]
    sandbox = Sandbox.objects.get(public_id=running["id"])
    return running, sandbox, stack.server_url(owner.hub_username, sandbox.server_name)


def signed_in_to_sandbox(page, owner, running: dict, server_url: str) -> None:
    """`owner` signs in to the portal, then opens their sandbox (single sign-on into the hub)
    and lands in JupyterLab."""
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))
    page.goto(running["url"])
    page.wait_for_url(re.compile(rf"^{re.escape(server_url)}lab"), timeout=60_000)
    expect(page).to_have_title(re.compile("JupyterLab"), timeout=60_000)
