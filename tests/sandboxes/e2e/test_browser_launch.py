"""A student presses Launch, watches the progress bar, and lands in JupyterLab without a second
login: Chromium against the real portal (ASGI, WebSockets), worker, hub, proxy and Docker."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from sandboxes.launcher.models import Sandbox
from tests.browser.conftest import chromium
from tests.factories import PASSWORD
from tests.sandboxes.launcher.helpers import funded_student

from .conftest import hub_sign_in_allowed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def browser(monkeypatch):
    """Chromium for this one test only. Playwright's sync API keeps an event loop running in
    the test thread while it lives; held any longer (the browser package's package-scoped
    fixture, kept alive by pytest-django's reordering) it breaks the async tests that follow."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls beside that loop
    with chromium() as launched:
        yield launched


def test_a_student_launches_and_lands_in_jupyterlab(stack, portal_server, browser, settings):
    hub_sign_in_allowed(stack, settings)
    student = funded_student()
    context = browser.new_context(base_url=portal_server.url, locale="en-GB")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(student.email)
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()

    page.goto("/sandboxes/")
    page.get_by_label("Python (data science)").check()
    page.get_by_label("CPU small").check()
    page.get_by_role("button", name="Launch").click()

    # The progress bar shows while it starts, then the row turns to Running with Open.
    row = page.locator("tr[data-sandbox]")
    expect(row.locator('[data-field="status_label"]')).to_have_text(
        re.compile("Starting|Running"), timeout=10_000
    )
    expect(row.get_by_role("link", name="Open")).to_be_visible(timeout=120_000)
    assert Sandbox.objects.get().status == "running"
    progress_seen = page.evaluate("() => document.querySelector('progress') !== null")
    assert progress_seen

    with context.expect_page() as opened:
        row.get_by_role("link", name="Open").click()
    lab = opened.value
    try:
        own_origin = re.escape(stack.user_origin(student.hub_username))
        lab.wait_for_url(re.compile(rf"^{own_origin}/user/.+/lab"), timeout=60_000)
    except Exception as exc:
        hub_log = [line for line in stack.log().splitlines() if "activity" not in line]
        raise AssertionError(f"stuck at {lab.url}:\n" + "\n".join(hub_log[-60:])) from exc
    expect(lab).to_have_title(re.compile("JupyterLab"), timeout=60_000)
    # No second login: no page on the way asked for a password.
    assert "login" not in urlsplit(lab.url).path
    context.close()
