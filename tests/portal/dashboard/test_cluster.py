"""The cluster page's history: per device per day, idle-but-allocated time per holder, and the
month's top consumers, under the live tiles, in a bounded number of queries."""

import datetime as dt
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.credits.services import account_for_organisation, account_for_student
from portal.dashboard.selectors.cluster import device_history, holders_idle, top_consumers
from portal.organisations.models import Role
from sandboxes.gpus.models import GpuAllocation
from tests.factories import MembershipFactory, StudentProfileFactory
from tests.portal.credits.helpers import lot

from .programme_helpers import HOUR, NOW, at, charge, gpus, hour_of, rollup, sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _interval(settings):
    settings.METERING_INTERVAL = 10  # 360 samples are one hour


def _founder(name: str):
    membership = MembershipFactory(role=Role.OWNER, organisation__legal_name=name)
    return (
        membership.user,
        membership.organisation,
        account_for_organisation(membership.organisation),
    )


def test_utilisation_per_device_per_day_from_the_hourly_rollups():
    first, second = gpus(2)
    today_10 = hour_of(NOW.replace(hour=10))  # 10:00 in Pakistan today
    # given today: the first GPU held all hour at 50 %, then an hour at 30 % half held
    rollup(first, today_10, util=50.0, held=360)
    rollup(first, today_10 + dt.timedelta(hours=1), util=30.0, held=180)
    # yesterday: held all hour, idle (2 %); the second GPU free and cold today
    rollup(first, today_10 - dt.timedelta(days=1), util=2.0, held=360, idle=360)
    rollup(second, today_10, util=0.0)
    # and 15 days ago, outside the 14 days
    rollup(first, today_10 - dt.timedelta(days=15), util=99.0, held=360)

    with at(NOW):
        history = device_history(days=14)

    assert len(history.days) == 14
    assert history.days[-1] == NOW.date()
    assert [row.device for row in history.devices] == [first, second]
    first_row, second_row = history.devices
    today, yesterday = first_row.days[-1], first_row.days[-2]
    assert (today.util_pct, today.held_hours, today.idle_held_hours) == (40.0, 1.5, 0.0)
    assert (yesterday.util_pct, yesterday.held_hours, yesterday.idle_held_hours) == (2.0, 1.0, 1.0)
    assert yesterday.level == 0
    assert today.level == 2
    assert first_row.days[:-2] == [None] * 12
    assert (first_row.total.util_pct, first_row.total.held_hours) == (27.3, 2.5)
    assert first_row.total.idle_held_hours == 1.0
    assert (second_row.days[-1].util_pct, second_row.days[-1].held_seconds) == (0.0, 0)
    # the cluster's days (the chart) add the devices up
    series = history.series
    assert series["held_hours"][-2:] == [1.0, 1.5]
    assert series["idle_held_hours"][-2:] == [1.0, 0.0]
    assert series["held_hours"][:-2] == [None] * 12


def test_idle_but_allocated_time_goes_to_whoever_held_the_device_that_hour():
    # given two startups and a student
    alpha_user, alpha, alpha_account = _founder("Alpha AI (Private) Limited")
    beta_user, beta, beta_account = _founder("Beta Vision (Private) Limited")
    student = StudentProfileFactory(user__email="ayesha@nust.edu.pk").user
    student_account = account_for_student(student)
    first, second = gpus(2)
    hour = hour_of(NOW) - dt.timedelta(hours=5)
    with at(hour):
        alpha_box = sandbox(alpha_user, alpha_account, organisation=alpha)
        beta_box = sandbox(beta_user, beta_account, organisation=beta)
        student_box = sandbox(student, student_account)
    # the first GPU: Alpha's for the first half hour, then Beta's (still held)
    with at(hour):
        GpuAllocation.objects.create(
            device=first, sandbox=alpha_box, released_at=hour + dt.timedelta(minutes=30)
        )
    with at(hour + dt.timedelta(minutes=30)):
        GpuAllocation.objects.create(device=first, sandbox=beta_box)
    rollup(first, hour, util=3.0, held=360, idle=180)
    rollup(first, hour + dt.timedelta(hours=1), util=1.0, held=360, idle=360)
    # the second GPU: the student's for two busy hours
    with at(hour):
        GpuAllocation.objects.create(
            device=second, sandbox=student_box, released_at=hour + dt.timedelta(hours=2)
        )
    rollup(second, hour, util=80.0, held=360)
    rollup(second, hour + dt.timedelta(hours=1), util=70.0, held=360)
    # and an hour the samples say was held, with no allocation on record
    rollup(second, hour + dt.timedelta(hours=3), util=0.0, held=36, idle=36)

    with at(NOW):
        holders = holders_idle(start=NOW - dt.timedelta(days=14), end=NOW)

    rows = [(h.name, h.held_seconds, h.idle_held_seconds) for h in holders]
    assert rows == [
        # the shared hour split half and half; Beta's second hour all idle
        ("Beta Vision (Private) Limited", 1800 + 3600, 900 + 3600),
        ("Alpha AI (Private) Limited", 1800, 900),
        ("", 360, 360),
        ("ayesha@nust.edu.pk", 7200, 0),
    ]
    assert holders[0].idle_share_pct == 83.3
    assert holders[0].account_public_id == str(beta_account.public_id)
    assert holders[3].kind == "student"
    assert holders[2].account_public_id is None
    # and the holders' idle hours add up to the devices'
    assert sum(h.idle_held_seconds for h in holders) == (180 + 360 + 36) * 10


def test_top_consumers_this_month_from_the_ledger():
    alpha_user, alpha, alpha_account = _founder("Alpha AI (Private) Limited")
    _beta_user, _beta, beta_account = _founder("Beta Vision (Private) Limited")
    student = StudentProfileFactory(user__email="ayesha@nust.edu.pk").user
    student_account = account_for_student(student)
    with at(NOW - dt.timedelta(days=30)):  # last month: Beta used the most
        lot(beta_account, 20 * HOUR, days=60)
        charge(beta_account, 10 * HOUR)
    with at(NOW):
        lot(alpha_account, 20 * HOUR)
        lot(student_account, 5 * HOUR)
        charge(alpha_account, 5 * HOUR)
        charge(alpha_account, 1800)
        charge(student_account, 2 * HOUR)
        charge(beta_account, HOUR)
        consumers = top_consumers(limit=2)
    assert [(c.name, c.kind, c.used_credit_seconds) for c in consumers] == [
        ("Alpha AI (Private) Limited", "organisation", 5 * HOUR + 1800),
        ("ayesha@nust.edu.pk", "student", 2 * HOUR),
    ]


def _cluster(size: int, offset_days: int) -> None:
    devices = gpus(size)
    for n, device in enumerate(devices):
        user, organisation, account = _founder(f"Org {offset_days}-{n}")
        lot(account, 10 * HOUR)
        charge(account, 600)
        hour = hour_of(NOW) - dt.timedelta(days=offset_days, hours=n)
        with at(hour):
            box = sandbox(user, account, organisation=organisation)
            GpuAllocation.objects.create(
                device=device, sandbox=box, released_at=hour + dt.timedelta(hours=1)
            )
        rollup(device, hour, util=1.0, held=360, idle=360)


def test_the_cluster_page_keeps_the_live_tiles_and_adds_the_history_in_bounded_queries(
    client, programme_manager, django_assert_max_num_queries
):
    client.force_login(programme_manager)
    url = reverse("dashboard:cluster")
    with at(NOW):
        _cluster(2, offset_days=1)
        client.get(url)
        with CaptureQueriesContext(connection) as small:
            response = client.get(url)
        page = response.content.decode()
        _cluster(10, offset_days=3)
        with django_assert_max_num_queries(len(small.captured_queries)):
            response = client.get(url)
    assert len(small.captured_queries) <= 25
    # the live part is still there
    assert 'id="gpu-tiles"' in page
    assert 'data-ws-path="/ws/live/cluster/"' in page
    # and the history below it, with its chart's data embedded
    for table in ("device-days", "hoarding", "consumers"):
        assert f'id="{table}"' in page
    data = re.search(
        r'<script id="cluster-history-data" type="application/json">(.*?)</script>', page, re.S
    )
    assert len(json.loads(data.group(1))["series"]["t"]) == 14
    assert "/static/js/cluster-history.js" in page
    assert "style=" not in page
    # every GPU gets a row, every holder's idle hour is counted
    assert len(response.context["history"].devices) == 10
    assert len(response.context["hoarding"]) == 12
    assert all(h.idle_held_seconds == 3600 for h in response.context["hoarding"])
    # over the same days as the devices' table: the holders' idle hours add up to it
    assert sum(h.idle_held_seconds for h in response.context["hoarding"]) == sum(
        row.total.idle_held_seconds for row in response.context["history"].devices
    )
