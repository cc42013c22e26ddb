"""The programme overview: who arrived, credits this month from the ledger, the waiting
applications and the sandbox queue, the cluster now and over the last week, in a bounded number
of queries."""

import datetime as dt
import json
import re

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.credits.models import CreditApplication, LedgerEntry
from portal.credits.services import (
    account_for_organisation,
    account_for_student,
    adjustment_post,
    rollups_refresh,
)
from portal.credits.units import month_bounds
from portal.onboarding.allowance import student_allowance_grant
from portal.organisations.models import Role
from sandboxes.gpus.models import GpuAllocation
from sandboxes.launcher.models import Sandbox
from sandboxes.metering.models import DeviceSample, SandboxRun
from tests.factories import (
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UserFactory,
)
from tests.portal.credits.helpers import lot

from .programme_helpers import HOUR, NOW, at, charge, gpus, hour_of, rollup, sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 10
    settings.METERING_INTERVAL = 10
    settings.CREDITS_REVIEW_SLA_DAYS = 5


def _application(organisation, *, state="submitted", days_ago=None, **fields):
    return CreditApplication.objects.create(
        organisation=organisation,
        created_by=organisation.created_by,
        title=fields.pop("title", "Urdu OCR"),
        summary="Train an OCR model on scanned newspapers.",
        sector="language",
        requested_gpu_hours=100,
        duration_months=3,
        data_sensitivity="public",
        state=state,
        submitted_at=None if days_ago is None else NOW - dt.timedelta(days=days_ago),
        **fields,
    )


def test_overview_counts_this_months_grants_and_usage_from_the_ledger(client, programme_manager):
    # given an organisation and a student with entries last month and this month
    organisation = OrganisationFactory()
    org_account = account_for_organisation(organisation)
    student = StudentProfileFactory().user
    with at(NOW - dt.timedelta(days=30)):  # 19 October: last month
        lot(org_account, 50 * HOUR)
        charge(org_account, HOUR)
    with at(NOW):
        lot(org_account, 100 * HOUR)  # a grant
        student_allowance_grant(user=student)  # 10 GPU-hours
        charge(org_account, 3 * HOUR + 1800)
        charge(account_for_student(student), 1800)
        adjustment_post(  # a correction, not a grant
            account=org_account,
            credit_seconds=5 * HOUR,
            reason="Outage on 3 November",
            idempotency_key="adjustment:test",
            acting_user=programme_manager,
        )
        rollups_refresh(months=[NOW.date().replace(day=1)])  # as the beat task does
        # when the programme manager opens the overview
        client.force_login(programme_manager)
        response = client.get(reverse("dashboard:overview"))
    # then granted and used are this month's, on holder accounts, from the ledger's roll-ups
    ledger = response.context["ledger"]
    assert ledger.month == dt.date(2026, 11, 1)
    assert ledger.granted_credit_seconds == 110 * HOUR
    assert ledger.used_credit_seconds == 4 * HOUR
    # (the holder entries of the month, summed one by one, say the same)
    start, end = month_bounds(ledger.month)
    holder_entries = LedgerEntry.objects.filter(
        account__kind__in=["organisation", "student"], created_at__gte=start, created_at__lt=end
    )
    assert (
        ledger.granted_credit_seconds
        == holder_entries.filter(transaction__kind__in=["grant", "allowance"]).aggregate(
            s=Sum("amount")
        )["s"]
    )
    assert (
        ledger.used_credit_seconds
        == -holder_entries.filter(transaction__kind="usage").aggregate(s=Sum("amount"))["s"]
    )
    page = response.content.decode()
    assert re.search(r'id="stat-granted">110\.00<', page)
    assert re.search(r'id="stat-used">4\.00<', page)
    # and the daily usage chart has every day of the month so far, today's usage on the last
    usage = response.context["charts"]["usage"]
    assert len(usage["t"]) == 18
    assert usage["gpu_hours"][-1] == 4.0
    assert sum(usage["gpu_hours"]) == 4.0


def _run(sandbox_row, *, started, ended=None):
    return SandboxRun.objects.create(
        sandbox=sandbox_row,
        account=sandbox_row.account,
        rate_millicredits=1000,
        interval_seconds=10,
        started_at=started,
        ended_at=ended,
        charged_until=ended or started,
    )


def test_overview_counts_who_ran_sandboxes_this_month(client, programme_manager):
    # given a startup with two runs this month, a student with one that began last month and
    # is still open, and a startup whose only run ended last month
    busy, idle = (MembershipFactory(role=Role.OWNER) for _ in range(2))
    student = StudentProfileFactory().user
    with at(NOW):
        busy_box = sandbox(
            busy.user, account_for_organisation(busy.organisation), organisation=busy.organisation
        )
        student_box = sandbox(student, account_for_student(student))
        idle_box = sandbox(
            idle.user, account_for_organisation(idle.organisation), organisation=idle.organisation
        )
    _run(busy_box, started=NOW - dt.timedelta(days=3), ended=NOW - dt.timedelta(days=2))
    _run(busy_box, started=NOW - dt.timedelta(hours=1))
    _run(student_box, started=NOW - dt.timedelta(days=25))
    _run(idle_box, started=NOW - dt.timedelta(days=40), ended=NOW - dt.timedelta(days=35))
    with at(NOW):
        client.force_login(programme_manager)
        ledger = client.get(reverse("dashboard:overview")).context["ledger"]
    assert (ledger.organisations_using, ledger.students_using) == (1, 1)


def test_overview_shows_how_long_applications_wait(client, programme_manager):
    # given applications submitted 1, 2, 8 and 10 days ago, and some that are not waiting
    organisation = OrganisationFactory()
    for days in (1, 8):
        _application(organisation, days_ago=days)
    for days in (2, 10):
        _application(organisation, state="in_review", days_ago=days)
    _application(organisation, state="draft")
    _application(organisation, state="approved", days_ago=20)
    with at(NOW):
        client.force_login(programme_manager)
        response = client.get(reverse("dashboard:overview"))
    overview = response.context["overview"]
    # then four wait, the oldest for 10 days, the median for 5, two past the 5-day level
    assert overview.applications_waiting == 4
    assert overview.oldest_waiting_days == 10
    assert overview.median_waiting_days == 5.0
    assert overview.applications_overdue == 2
    page = response.content.decode()
    assert "median 5.0 days" in page
    assert 'id="stat-overdue"' in page
    assert "?min_days_waiting=5" in page


def test_overview_median_of_an_odd_count_is_the_middle_wait(programme_manager):
    from portal.dashboard.selectors.overview import applications_waiting

    organisation = OrganisationFactory()
    for days in (1, 3, 30):
        _application(organisation, days_ago=days)
    with at(NOW):
        waiting = applications_waiting()
    assert (waiting.count, waiting.median_days, waiting.oldest_days) == (3, 3.0, 30)


def test_overview_shows_the_sandbox_queue_and_the_cluster_now_and_last_week(
    client, programme_manager
):
    # given two GPUs, one held by a running sandbox and working at 40 %
    founder = MembershipFactory(role=Role.OWNER)
    account = account_for_organisation(founder.organisation)
    first, second = gpus(2)
    with at(NOW):
        running = sandbox(founder.user, account, organisation=founder.organisation)
        GpuAllocation.objects.create(device=first, sandbox=running)
        DeviceSample.objects.create(device=first, sandbox=running, taken_at=NOW, util_pct=40.0)
        DeviceSample.objects.create(device=second, taken_at=NOW, util_pct=0.0)
        # and two sandboxes queued for a GPU, the older for 3 hours
        for hours in (3, 1):
            sandbox(
                founder.user,
                account,
                status=Sandbox.Status.QUEUED,
                queued_at=NOW - dt.timedelta(hours=hours),
            )
    # and, two hours ago, one GPU held busy at 40 % and the other held half the hour, idle
    two_hours_ago = hour_of(NOW) - dt.timedelta(hours=2)
    rollup(first, two_hours_ago, util=40.0, held=360)
    rollup(second, two_hours_ago, util=0.0, held=180, idle=180)
    # and readings from 8 days ago, outside the chart's week
    rollup(first, two_hours_ago - dt.timedelta(days=8), util=90.0, held=360)

    with at(NOW):
        client.force_login(programme_manager)
        response = client.get(reverse("dashboard:overview"))

    queue = response.context["queue"]
    assert queue.length == 2
    assert queue.oldest_queued_at == NOW - dt.timedelta(hours=3)
    cluster = response.context["cluster"]
    assert (cluster.gpus, cluster.held, cluster.held_util_pct) == (2, 1, 40.0)
    # the chart: one point an hour for a week, that hour averaged over both GPUs' samples
    chart = response.context["charts"]["utilisation"]
    assert len(chart["t"]) == 7 * 24
    point = chart["t"].index(int(two_hours_ago.timestamp()))
    assert chart["util_pct"][point] == 20.0
    assert chart["held_pct"][point] == 75.0
    assert chart["idle_held_pct"][point] == 25.0
    assert sum(1 for v in chart["util_pct"] if v is not None) == 1
    # and its text equivalent, by day: 540 samples of 10 s held, 180 of them idle
    (today,) = response.context["utilisation_days"]
    assert (today.day, today.util_pct) == (NOW.date(), 20.0)
    assert (today.held_seconds, today.idle_held_seconds) == (5400, 1800)
    page = response.content.decode()
    assert re.search(r'id="stat-queue">2<', page)
    assert re.search(r'id="stat-cluster"[^>]*>1 / 2<', page)


def test_overview_draws_its_charts_from_embedded_data_without_inline_script(
    client, programme_manager
):
    client.force_login(programme_manager)
    page = client.get(reverse("dashboard:overview")).content.decode()
    data = re.search(
        r'<script id="overview-charts-data" type="application/json">(.*?)</script>', page, re.S
    )
    charts = json.loads(data.group(1))
    assert set(charts) == {"utilisation", "usage", "text"}
    assert "/static/vendor/uplot/uPlot.iife.min.js" in page
    assert "/static/js/overview.js" in page
    for tag in re.findall(r"<script[^>]*>", page):  # the CSP allows no inline script
        assert "src=" in tag or 'type="application/json"' in tag
    assert "style=" not in page


def _programme(size: int) -> None:
    """Organisations, students, applications, ledger entries, GPUs and their roll-ups."""
    devices = gpus(size)
    for n in range(size):
        founder = MembershipFactory(role=Role.OWNER)
        account = account_for_organisation(founder.organisation)
        lot(account, 10 * HOUR)
        charge(account, 600)
        _application(founder.organisation, days_ago=n + 1, title=f"Project {n}")
        student = StudentProfileFactory().user
        student_allowance_grant(user=student)
        charge(account_for_student(student), 300)
        sandbox(founder.user, account, status=Sandbox.Status.QUEUED, queued_at=NOW)
        for hours in range(3):  # the second call re-syncs the first call's GPUs: other hours
            bucket = hour_of(NOW) - dt.timedelta(hours=hours + 3 * size)
            rollup(devices[n], bucket, util=50.0, held=360)


def test_overview_queries_do_not_grow_with_the_programme(
    client, programme_manager, django_assert_max_num_queries
):
    client.force_login(programme_manager)
    url = reverse("dashboard:overview")
    with at(NOW):
        _programme(2)
        client.get(url)  # warm: the session, the content types
        with CaptureQueriesContext(connection) as small:
            assert client.get(url).status_code == 200
        _programme(12)
        with django_assert_max_num_queries(len(small.captured_queries)):
            response = client.get(url)
    assert response.context["overview"].organisations == 14
    assert response.context["queue"].length == 14
    assert len(small.captured_queries) <= 25


# --- Who arrived ------------------------------------------------------------------------------


def test_overview_counts_who_arrived(client, programme_manager):
    # given two founders with their startups, one student, and one person who only signed up
    for _ in range(2):
        founder = UserFactory()
        organisation = OrganisationFactory(created_by=founder)
        MembershipFactory(organisation=organisation, user=founder, role=Role.OWNER)
    StudentProfileFactory(cohort=CohortFactory(created_by=programme_manager))
    UserFactory()
    suspended = OrganisationFactory(created_by=founder, is_active=False)
    MembershipFactory(organisation=suspended, user=founder, role=Role.MEMBER)
    # when the programme manager opens the overview
    client.force_login(programme_manager)
    overview = client.get(reverse("dashboard:overview")).context["overview"]
    # then each arrival is counted once, and programme managers are not "pending"
    assert overview.organisations == 2
    assert overview.organisations_suspended == 1
    assert overview.students == 1
    assert overview.pending_onboarding == 1
    assert overview.cohorts == 1
