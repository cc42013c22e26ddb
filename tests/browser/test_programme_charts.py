"""The programme pages' charts in a real browser: uPlot draws the overview's and the cluster
history's charts from the embedded data, under the CSP, with no script error and no request
outside the deployment."""

import datetime as dt

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect

from portal.users.services import programme_manager_grant
from tests.conftest import totp_activate
from tests.factories import UserFactory
from tests.portal.dashboard.programme_helpers import gpus, hour_of, rollup

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _signed_in_manager(context, base_url: str) -> None:
    manager = UserFactory(email="manager@programme.gov.pk")
    programme_manager_grant(user=manager, acting_user=None)
    totp_activate(manager)
    client = Client()
    client.force_login(manager)
    name = django_settings.SESSION_COOKIE_NAME
    context.add_cookies([{"name": name, "value": client.cookies[name].value, "url": base_url}])


def test_the_overview_and_the_cluster_history_draw_their_charts(
    new_context, live_server, request_log
):
    first, second = gpus(2)
    now = hour_of(timezone.now())
    for hours in range(30):
        rollup(first, now - dt.timedelta(hours=hours), util=60.0, held=360)
        rollup(second, now - dt.timedelta(hours=hours), util=1.0, held=360, idle=360)
    context = new_context()
    _signed_in_manager(context, live_server.url)
    page = context.new_page()
    errors, csp = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            csp.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )

    page.goto("/programme/")
    utilisation = page.locator('[data-chart="utilisation"]')
    expect(utilisation.locator("canvas")).to_have_count(1)
    expect(utilisation).to_have_attribute("data-points", str(7 * 24))
    expect(page.locator('[data-chart="usage"] canvas')).to_have_count(1)

    page.goto("/programme/cluster/")
    days = page.locator('[data-chart="days"]')
    expect(days.locator("canvas")).to_have_count(1)
    expect(days).to_have_attribute("data-points", "14")
    expect(page.locator("#device-days tbody tr")).to_have_count(2)

    assert errors == []
    assert csp == []
    request_log.assert_only_live_server()
