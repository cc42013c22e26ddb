"""The live pages in a real browser. A sandbox's page: usage, credits and the stop countdown
arrive over the WebSocket (the portal's ASGI app under uvicorn, the real Redis channel layer)
and show without a reload; other ranges come from the usage API, and its failure is said, not
hidden. An organisation's page and the cluster view follow their own streams."""

import datetime as dt
import json
import re
import threading
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect

from portal.users.services import programme_manager_grant
from sandboxes.gpus.models import GpuAllocation
from sandboxes.live.broadcast import (
    CLUSTER_GROUP,
    organisation_group,
    send_after_commit,
    user_group,
)
from sandboxes.metering.models import UsageSample
from tests.browser.conftest import TIMEOUT_MS, RequestLog
from tests.conftest import totp_activate
from tests.factories import UserFactory
from tests.sandboxes.e2e.conftest import AsgiServer
from tests.sandboxes.launcher.conftest import _no_hub_tasks  # noqa: F401 - the hub stays out
from tests.sandboxes.launcher.helpers import funded_founder, funded_student, gpus
from tests.sandboxes.metering.helpers import running

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("_no_hub_tasks"),
]


@pytest.fixture
def portal_server(transactional_db, settings):
    """The portal over ASGI (pytest-django's live server has no WebSockets), with channel-layer
    keys of this test's own in the shared test Redis."""
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    layers["default"]["CONFIG"]["prefix"] = f"live-browser-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = layers  # channels drops its cached layers on setting_changed
    with AsgiServer() as server:
        yield server


def _send(messages) -> None:
    try:
        send_after_commit(messages)
    finally:
        connection.close()  # on_commit opened one, to ask about autocommit


def push(messages) -> None:
    """Broadcast as the metering tick does. From a thread of its own: Playwright keeps an event
    loop running in the test's thread, where async_to_sync refuses to run."""
    sender = threading.Thread(target=_send, args=(messages,))
    sender.start()
    sender.join(timeout=10)


def push_until(messages, shown, timeout_s: float = 10) -> None:
    """Push until the page shows it: the socket may still be joining its group when the page
    has loaded, and what is sent before that is (rightly) lost."""
    deadline = timezone.now() + dt.timedelta(seconds=timeout_s)
    while True:
        push(messages)
        try:
            shown(500)
            return
        except AssertionError:
            if timezone.now() > deadline:
                raise


def signed_in(context, base_url: str, user) -> None:
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": base_url}])


def test_usage_and_the_stop_countdown_arrive_live_on_the_sandbox_page(portal_server, browser):
    # Given a student's running sandbox on a (simulated) GPU, with one sample already stored
    gpus(1)
    student = funded_student(hours=10)
    sandbox, _run = running(student, "gpu-1")
    UsageSample.objects.create(
        sandbox=sandbox, taken_at=timezone.now() - dt.timedelta(minutes=1), gpu_util_pct=12.0
    )
    sandbox_id = str(sandbox.public_id)
    context = browser.new_context(base_url=portal_server.url, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    log = RequestLog(portal_server.url)
    log.watch(context)
    signed_in(context, portal_server.url, student)
    page = context.new_page()

    # When the student opens the sandbox's page
    page.goto(f"/sandboxes/{sandbox_id}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(sandbox.display_name)
    chart = page.locator('[data-chart="gpu_util_pct"]')
    expect(chart.locator("canvas")).to_have_count(1)  # drawn by the vendored uPlot
    expect(page.locator(".chart canvas")).to_have_count(5)
    expect(chart).to_have_attribute("data-points", "1")
    expect(page.locator('[data-reading="gpu_util_pct"]')).to_have_text("12.0")
    expect(page.locator('[data-stat="balance"]')).to_have_text("10.0000")
    page.evaluate("() => { window.notReloaded = true; }")

    # Then a usage sample pushed through the channel layer shows at once
    now = timezone.now()
    sample = {
        "type": "usage.sample",
        "sandbox": sandbox_id,
        "user": student.email,
        "at": now.isoformat(),
        "simulated": True,
        "gpu_util_pct": 77.7,
        "gpu_memory_used_mib": 12345,
        "gpu_memory_total_mib": 81559,
        "gpu_power_w": 222.2,
        "gpu_temperature_c": 66,
        "cpu_pct": 31.5,
        "memory_used_mib": 777,
        "memory_limit_mib": 4096,
        "charged_credit_seconds": 1800,
        "gpus": [],
    }
    group = user_group(student.pk)
    reading = page.locator('[data-reading="gpu_util_pct"]')
    push_until([(group, sample)], lambda ms: expect(reading).to_have_text("77.7", timeout=ms))
    expect(page.locator('[data-reading="gpu_memory_used_mib"]')).to_have_text("12345")
    expect(page.locator('[data-reading="gpu_power_w"]')).to_have_text("222.2")
    expect(page.locator('[data-reading="cpu_pct"]')).to_have_text("31.5")
    expect(page.locator('[data-reading="memory_used_mib"]')).to_have_text("777")
    expect(page.locator('[data-stat="charged"]')).to_have_text("0.50")
    # and the charts took the point (once, however often it was pushed)
    expect(chart).to_have_attribute("data-points", "2")

    # and so do the account's balance and burn rate
    balance = {
        "type": "credits.balance",
        "account": str(sandbox.account.public_id),
        "balance_credit_seconds": 9000,
        "balance_gpu_hours": "2.50",
        "burn_credit_seconds_per_hour": 3600,
        "runway_seconds": 9000,
        "at": now.isoformat(),
    }
    push([(group, balance)])
    expect(page.locator('[data-stat="balance"]')).to_have_text("2.5000")
    expect(page.locator('[data-stat="burn"]')).to_have_text("1.00")
    expect(page.locator('[data-stat="runway"]')).to_have_text("2 h 30 min")

    # When the credits run out, the countdown banner appears and counts down
    countdown = page.locator("#countdown")
    expect(countdown).to_be_hidden()
    exhausted = {
        "type": "credits.warning",
        "account": str(sandbox.account.public_id),
        "kind": "exhausted",
        "threshold_percent": None,
        "message": "The GPU credits have run out: running sandboxes stop at the time shown.",
        "stop_at": (now + dt.timedelta(seconds=120)).isoformat(),
        "sandboxes": [sandbox_id],
    }
    push([(group, exhausted)])
    expect(countdown).to_be_visible()
    clock = countdown.locator('[data-field="clock"]')
    expect(clock).to_have_text(re.compile(r"^[12]:\d\d$"))
    first = clock.text_content()
    expect(clock).not_to_have_text(first, timeout=3000)  # it ticks

    # and "restored" takes it away
    push([(group, {**exhausted, "kind": "restored", "stop_at": None})])
    expect(countdown).to_be_hidden()

    # A longer range is read from the usage API; a failing API is said, the charts kept
    page.get_by_label("Last 24 hours").check()
    expect(page).to_have_url(re.compile(r"range=24h"))
    expect(page.locator("#usage-error")).to_be_hidden()
    page.route(
        "**/api/v1/usage?**",
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body=json.dumps({"error": {"code": "unavailable", "message": "Try later."}}),
        ),
    )
    page.get_by_label("Last 7 days").check()
    expect(page.locator("#usage-error")).to_be_visible()
    expect(page.locator("#usage-error")).to_contain_text("Try later.")

    # All of it without a reload, and nothing from another host
    assert page.evaluate("() => window.notReloaded === true")
    context.close()
    log.assert_only_live_server()


def test_a_cpu_only_sandbox_shows_only_what_it_has(portal_server, browser):
    # Given a student's running CPU-only sandbox
    student = funded_student(hours=10)
    sandbox, _run = running(student, "cpu-small")
    sandbox_id = str(sandbox.public_id)
    context = browser.new_context(base_url=portal_server.url, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    signed_in(context, portal_server.url, student)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # When they open its page, and a sample arrives
    page.goto(f"/sandboxes/{sandbox_id}/")
    expect(page.locator(".chart canvas")).to_have_count(2)
    group = user_group(student.pk)
    sample = {
        "type": "usage.sample",
        "sandbox": sandbox_id,
        "user": student.email,
        "at": timezone.now().isoformat(),
        "simulated": False,
        "gpu_util_pct": None,
        "gpu_memory_used_mib": None,
        "gpu_memory_total_mib": None,
        "gpu_power_w": None,
        "gpu_temperature_c": None,
        "cpu_pct": 42.5,
        "memory_used_mib": 512,
        "memory_limit_mib": 2048,
        "charged_credit_seconds": 60,
        "gpus": [],
    }
    reading = page.locator('[data-reading="cpu_pct"]')
    push_until([(group, sample)], lambda ms: expect(reading).to_have_text("42.5", timeout=ms))

    # Then it charts CPU and memory only: no empty GPU charts, and the page's script is content
    assert page.locator('[data-chart^="gpu_"]').count() == 0
    expect(page.locator('[data-chart="cpu_pct"]')).to_have_attribute("data-points", "1")
    assert errors == []
    context.close()


def test_the_organisation_page_and_the_cluster_view_update_live(portal_server, browser):
    # Given an organisation with a member's running sandbox, and a programme manager
    gpus(2)
    founder = funded_founder()
    organisation = founder.memberships.get().organisation
    sandbox, _run = running(founder, "gpu-1")
    device = GpuAllocation.objects.get(sandbox=sandbox, released_at__isnull=True).device
    manager = UserFactory(email="manager@programme.gov.pk")
    programme_manager_grant(user=manager, acting_user=None)
    totp_activate(manager)
    log = RequestLog(portal_server.url)
    pages = {}
    for who, user, url in [
        ("member", founder, f"/sandboxes/organisations/{organisation.public_id}/"),
        ("manager", manager, "/programme/cluster/"),
    ]:
        context = browser.new_context(base_url=portal_server.url, locale="en-GB")
        context.set_default_timeout(TIMEOUT_MS)
        log.watch(context)
        signed_in(context, portal_server.url, user)
        pages[who] = context.new_page()
        pages[who].goto(url)

    # When a tick's messages go to the organisation's and the cluster's streams
    row = pages["member"].locator(f'tr[data-sandbox="{sandbox.public_id}"]')
    expect(row.locator('[data-reading="gpu_util_pct"]')).to_have_text("—")
    sample = {
        "type": "usage.sample",
        "sandbox": str(sandbox.public_id),
        "user": founder.email,
        "at": timezone.now().isoformat(),
        "simulated": True,
        "gpu_util_pct": 91.0,
        "gpu_memory_used_mib": 4321,
        "gpu_memory_total_mib": device.memory_mib,
        "gpu_power_w": 280.0,
        "gpu_temperature_c": 65,
        "cpu_pct": 44.4,
        "memory_used_mib": 600,
        "memory_limit_mib": 4096,
        "charged_credit_seconds": 10,
        "gpus": [],
    }
    push_until(
        [(organisation_group(organisation.pk), sample)],
        lambda ms: expect(row.locator('[data-reading="gpu_util_pct"]')).to_have_text(
            "91.0", timeout=ms
        ),
    )
    expect(row.locator('[data-reading="cpu_pct"]')).to_have_text("44.4")

    tile = pages["manager"].locator(f'.gpu-tile[data-gpu="{device.uuid}"]')
    expect(tile.locator('[data-field="util_pct"]')).to_have_text("—")
    tiles = {
        "type": "cluster.gpus",
        "at": timezone.now().isoformat(),
        "gpus": [
            {
                "uuid": device.uuid,
                "index": device.index,
                "model": device.model,
                "mig_profile": "",
                "simulated": True,
                "health": "healthy",
                "holder": {
                    "sandbox": str(sandbox.public_id),
                    "user": "Ayesha Khan",
                    "organisation": organisation.legal_name,
                },
                "util_pct": 55.5,
                "memory_used_mib": 1234,
                "memory_total_mib": device.memory_mib,
                "power_w": 199.9,
                "temperature_c": 58,
            }
        ],
    }
    push_until(
        [(CLUSTER_GROUP, tiles)],
        lambda ms: expect(tile.locator('[data-field="util_pct"]')).to_have_text("55.5", timeout=ms),
    )

    # Then the tiles follow the message: its GPU updated, the one it left out gone
    expect(tile.locator('[data-field="holder"]')).to_have_text(
        f"Ayesha Khan · {organisation.legal_name}"
    )
    expect(tile.locator('[data-field="temperature_c"]')).to_have_text("58")
    expect(pages["manager"].locator(".gpu-tile[data-gpu]")).to_have_count(1)
    for page in pages.values():
        page.context.close()
    log.assert_only_live_server()
