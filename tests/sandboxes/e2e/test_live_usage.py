"""Live usage end to end: a real sandbox container, a real beat and worker, Redis, the portal under
uvicorn, and Chromium watching the sandbox page. The notebook works, the charts and the balance
move, and the ledger holds rate × allocated seconds; an account that runs dry sees the countdown,
then the sandbox stops and its GPU is free again."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import connection
from django.db.models import Sum
from playwright.sync_api import expect

from portal.credits.models import LedgerEntry
from portal.credits.services import account_for_student
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.charging import owed
from sandboxes.metering.models import SandboxRun
from tests.browser.conftest import chromium
from tests.factories import PASSWORD, StudentProfileFactory
from tests.portal.credits.helpers import lot
from tests.sandboxes.e2e.conftest import celery_beat
from tests.sandboxes.e2e.test_sandbox_lifecycle import execute
from tests.sandboxes.launcher.helpers import funded_student, gpus, image, profile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
INTERVAL = 2


@pytest.fixture
def stack_env():
    return {"METERING_INTERVAL": str(INTERVAL), "METERING_GRACE_SECONDS": "6"}


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls beside Playwright's loop
    with chromium() as launched:
        yield launched


def wait_until(predicate, *, timeout: float, what: str, hub=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = ""
            if hub is not None:
                detail = f"\n--- worker ---\n{hub.worker_log.read_text()[-3000:]}"
            raise AssertionError(f"timed out: {what}{detail}")
        time.sleep(0.2)


def in_thread(service, **kwargs):
    """Call a service from another thread: Playwright's event loop holds the test's thread, and
    the broadcasts a service sends after its commit cannot run beside it."""
    result = []

    def call():
        try:
            result.append(service(**kwargs))
        finally:
            connection.close()  # this thread's own connection, or the test database stays busy

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    return result[0]


def launched_and_running(user, stack, slug="gpu-1") -> Sandbox:
    sandbox = in_thread(launcher.sandbox_launch, user=user, image=image(), profile=profile(slug))
    wait_until(
        lambda: Sandbox.objects.get(pk=sandbox.pk).status in ("running", "failed"),
        timeout=120,
        what="the sandbox to run",
        hub=stack,
    )
    sandbox.refresh_from_db()
    assert sandbox.status == "running", sandbox.status_message
    return sandbox


def signed_in(browser, portal_server, user):
    context = browser.new_context(base_url=portal_server.url, locale="en-GB")
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label(re.compile(r"^Password:?$")).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/)"))
    return page


def test_a_student_watches_the_notebook_work_and_pays_for_allocated_time(
    stack, portal_server, browser, settings, tmp_path
):
    settings.METERING_INTERVAL = INTERVAL
    gpus(2)
    student = funded_student(hours=10)
    sandbox = launched_and_running(student, stack)
    with celery_beat(stack.worker_env, tmp_path / "beat.log"):
        page = signed_in(browser, portal_server, student)
        page.goto(f"/sandboxes/{sandbox.public_id}/")
        balance = page.locator('[data-stat="balance"]')
        first_balance = balance.inner_text()
        util = page.locator('[data-reading="gpu_util_pct"]')
        expect(util).not_to_have_text("—", timeout=30_000)  # a first sample arrived live

        # The notebook works for a while: the simulated GPU follows its real CPU load.
        access = in_thread(launcher.access_token_issue, sandbox=sandbox, acting_user=student)
        work = threading.Thread(
            target=execute,
            args=(
                access["server_url"],
                access["token"],
                "import time\nt = time.time()\nwhile time.time() - t < 20: pass\n1",
            ),
        )
        work.start()
        try:
            wait_until(
                lambda: util.inner_text() != "—" and float(util.inner_text()) > 50,
                timeout=30,
                what="the GPU graph to rise with the notebook's work",
            )
            cpu = float(page.locator('[data-reading="cpu_pct"]').inner_text())
            assert cpu > 20  # real CPU time of the kernel (a shared, noisy machine)
        finally:
            work.join()
        expect(balance).not_to_have_text(first_balance, timeout=30_000)
        points = page.evaluate("() => document.querySelectorAll('[data-chart] .u-over').length")
        assert points == 5  # five live charts drawn

        in_thread(launcher.sandbox_stop, sandbox=sandbox, acting_user=student)
        wait_until(
            lambda: SandboxRun.objects.filter(sandbox=sandbox, settled=True).exists(),
            timeout=90,
            what="the run to be settled",
            hub=stack,
        )
    run = SandboxRun.objects.get(sandbox=sandbox)
    sandbox.refresh_from_db()
    charged = -LedgerEntry.objects.filter(
        account=account_for_student(student), transaction__kind="usage"
    ).aggregate(total=Sum("amount"))["total"]
    assert (
        charged
        == run.charged_credit_seconds
        == owed(rate_millicredits=1000, started_at=run.started_at, until=run.ended_at)
    )
    allocated = (sandbox.stopped_at - sandbox.starting_at).total_seconds()  # from allocation
    assert abs(charged - allocated) <= INTERVAL  # rate 1 credit-second per second


def test_an_account_that_runs_dry_sees_the_countdown_then_the_sandbox_stops(
    stack, portal_server, browser, settings, tmp_path
):
    settings.METERING_INTERVAL = INTERVAL
    settings.SANDBOX_MIN_RUNWAY_MINUTES = 0  # so that a nearly empty account may launch
    gpus(1)
    student = StudentProfileFactory().user
    lot(account_for_student(student), 8)  # eight seconds of one GPU
    sandbox = launched_and_running(student, stack)
    with celery_beat(stack.worker_env, tmp_path / "beat.log"):
        page = signed_in(browser, portal_server, student)
        page.goto(f"/sandboxes/{sandbox.public_id}/")
        countdown = page.locator("#countdown")
        expect(countdown).to_be_visible(timeout=60_000)
        expect(countdown.locator('[data-field="clock"]')).to_have_text(re.compile(r"\d"))
        wait_until(
            lambda: Sandbox.objects.get(pk=sandbox.pk).status == "stopped",
            timeout=90,
            what="the sandbox to be stopped",
            hub=stack,
        )
        expect(page.locator("#sandbox-status")).to_have_text(re.compile("Stopp"), timeout=30_000)
    run = SandboxRun.objects.get(sandbox=sandbox)
    assert run.exhausted_at is not None
    assert run.stop_at <= Sandbox.objects.get(pk=sandbox.pk).stopped_at
    assert not GpuAllocation.objects.filter(released_at__isnull=True).exists()
    account = account_for_student(student)
    assert account.balance == 0
    assert run.charged_credit_seconds == 8
    assert run.unpaid_credit_seconds > 0  # the grace period, recorded, not hidden
