"""The ledger's roll-ups: written with the postings, refreshed into programme figures, rebuilt by
a command, and reconciled each night with drift audited (the property test,
test_rollups_properties.py, compares them with the ledger after random postings)."""

import datetime as dt
import logging
import random
import re
import uuid
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.credits import sql
from portal.credits.models import (
    AccountRollup,
    CreditAccount,
    CreditGrant,
    ProgrammeRollup,
    ProgrammeRollupRefresh,
    RollupPeriod,
)
from portal.credits.selectors import statement_for, statement_months
from portal.credits.services import (
    account_for_student,
    account_rollups_rebuild,
    account_rollups_reconcile,
    grant_issue,
    rollups_refresh,
)
from portal.credits.services.rollups import FINAL_AFTER, months_to_refresh
from portal.credits.tasks import rollups_reconcile_task, rollups_refresh_task
from tests.factories import (
    CohortFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UniversityFactory,
)
from tests.portal.credits.helpers import charge, lot, org_account

pytestmark = pytest.mark.django_db
KARACHI = dt.timezone(dt.timedelta(hours=5))


def _rows(account) -> dict:
    return {
        (r.period, r.starts, r.kind, r.rate_pkr_per_gpu_hour): (r.amount, r.entries)
        for r in AccountRollup.objects.filter(account=account)
    }


def test_the_local_day_function_names_the_portal_time_zone():
    # given the SQL that cuts days, and the zone the rest of the portal cuts them in
    zones = re.findall(r"AT TIME ZONE '([^']+)'", sql.source("credits_local_day"))

    # then they are the same zone
    assert zones == [settings.TIME_ZONE]


def test_the_local_day_function_agrees_with_python_around_local_midnight():
    if connection.vendor != "postgresql":
        pytest.skip("The ledger's functions are PostgreSQL's; `make test` runs this")
    # given instants around a Karachi midnight that is also a month end (19:00 UTC)
    instants = [
        dt.datetime(2027, 1, 31, 18, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2027, 1, 31, 19, 0, tzinfo=dt.UTC),
        dt.datetime(2027, 1, 31, 23, 59, tzinfo=dt.UTC),
        dt.datetime(2027, 2, 1, 0, 0, tzinfo=dt.UTC),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credits_local_day(t) FROM unnest(%s::timestamptz[]) AS t", [instants]
        )
        days = [row[0] for row in cursor.fetchall()]

    # then each is the local date Python gives it
    assert days == [timezone.localtime(i).date() for i in instants]
    assert days[:2] == [dt.date(2027, 1, 31), dt.date(2027, 2, 1)]


def test_a_grant_and_usage_are_rolled_up_on_the_holder_only():
    # given an organisation with a lot
    account = org_account()
    grant = lot(account, 5_000)
    today = timezone.localdate()

    # when it is charged twice
    charge(account, 300, "roll-1")
    charge(account, 200, "roll-2")

    # then its day and month rows hold each kind's sum and count, at the lot's rate
    rate = grant.rate_pkr_per_gpu_hour
    assert _rows(account) == {
        ("day", today, "grant", rate): (5_000, 1),
        ("month", today.replace(day=1), "grant", rate): (5_000, 1),
        ("day", today, "usage", rate): (-500, 2),
        ("month", today.replace(day=1), "usage", rate): (-500, 2),
    }
    # and no system account has a roll-up (they are the other side of every posting)
    assert not AccountRollup.objects.filter(account__kind=CreditAccount.Kind.SYSTEM).exists()


def test_a_charge_over_two_lots_at_two_rates_has_a_row_per_rate():
    # given two lots at different rates, the cheaper expiring first
    account = org_account()
    first = grant_issue(
        account=account,
        credit_seconds=100,
        rate_pkr_per_gpu_hour=Decimal("123.45"),
        expires_at=timezone.now() + dt.timedelta(days=1),
        source=CreditGrant.Source.APPLICATION,
        idempotency_key=f"two-rates:{uuid.uuid4()}",
    )
    lot(account, 1_000, days=30)
    month = timezone.localdate().replace(day=1)

    # when a charge takes all of the first and some of the second
    charge(account, 250, "two-rates-charge")

    # then the month has one usage row per rate
    rows = _rows(account)
    assert rows[("month", month, "usage", first.rate_pkr_per_gpu_hour)] == (-100, 1)
    assert rows[("month", month, "usage", Decimal("750.00"))] == (-150, 1)


def test_usage_either_side_of_local_midnight_lands_on_each_local_day():
    # given a lot, at 23:59 in Karachi on the last day of a month (18:59 UTC)
    with time_machine.travel(dt.datetime(2027, 1, 31, 23, 59, tzinfo=KARACHI), tick=False) as clock:
        account = org_account()
        grant = lot(account, 10_000)
        charge(account, 10, "before-midnight")
        # when the next charge comes two minutes later, past local midnight but not UTC's
        clock.shift(dt.timedelta(minutes=2))
        charge(account, 20, "after-midnight")

    # then each is in its own local day and month
    rate = grant.rate_pkr_per_gpu_hour
    rows = _rows(account)
    assert rows[("day", dt.date(2027, 1, 31), "usage", rate)] == (-10, 1)
    assert rows[("month", dt.date(2027, 1, 1), "usage", rate)] == (-10, 1)
    assert rows[("day", dt.date(2027, 2, 1), "usage", rate)] == (-20, 1)
    assert rows[("month", dt.date(2027, 2, 1), "usage", rate)] == (-20, 1)


def _programme():
    software = org_account(OrganisationFactory(sector="software", province="punjab"))
    health = org_account(OrganisationFactory(sector="health", province="sindh"))
    university = UniversityFactory(name="University of the Test")
    listed = account_for_student(
        StudentProfileFactory(route="email_domain", university=university, cohort=None).user
    )
    cohort = CohortFactory()
    in_cohort = account_for_student(StudentProfileFactory(cohort=cohort).user)
    for account in (software, health, listed, in_cohort):
        lot(account, 1_000)
    charge(software, 100, "p-1")
    charge(software, 50, "p-2")
    charge(health, 70, "p-3")
    charge(listed, 30, "p-4")
    charge(in_cohort, 20, "p-5")
    return university, cohort


def _programme_rows(dimension: str, kind: str) -> dict:
    month = timezone.localdate().replace(day=1)
    rows = ProgrammeRollup.objects.filter(
        period=RollupPeriod.MONTH, starts=month, dimension=dimension, kind=kind
    )
    return {(r.key, r.holder_kind): (r.amount, r.entries, r.holders) for r in rows}


def test_the_refresh_sums_each_dimension_with_the_catch_all_rows():
    # given two organisations and two students who were granted and charged this month
    university, cohort = _programme()

    # when the programme roll-ups are refreshed
    [month] = rollups_refresh()

    # then every dimension adds up the holders' usage, holders it does not describe apart
    assert month == timezone.localdate().replace(day=1)
    assert _programme_rows("programme", "usage") == {
        ("", "organisation"): (-220, 3, 2),
        ("", "student"): (-50, 2, 2),
    }
    assert _programme_rows("sector", "usage") == {
        ("software", "organisation"): (-150, 2, 1),
        ("health", "organisation"): (-70, 1, 1),
        ("~students", "student"): (-50, 2, 2),
    }
    assert _programme_rows("province", "usage")[("sindh", "organisation")] == (-70, 1, 1)
    assert _programme_rows("university", "usage") == {
        ("~organisations", "organisation"): (-220, 3, 2),
        (university.name, "student"): (-30, 1, 1),
        ("~none", "student"): (-20, 1, 1),
    }
    assert _programme_rows("cohort", "usage") == {
        ("~organisations", "organisation"): (-220, 3, 2),
        ("~none", "student"): (-30, 1, 1),
        (str(cohort.public_id), "student"): (-20, 1, 1),
    }
    # and the whole programme's day, for the daily chart (students' grants are grants here)
    day = ProgrammeRollup.objects.get(
        period=RollupPeriod.DAY,
        starts=timezone.localdate(),
        dimension="programme",
        holder_kind="organisation",
        kind="grant",
    )
    assert (day.amount, day.entries, day.holders) == (2_000, 2, 2)
    # and the month says when it was refreshed
    assert ProgrammeRollupRefresh.objects.filter(period="month", starts=month).exists()


def test_the_refresh_is_idempotent():
    # given refreshed programme roll-ups
    _programme()
    rollups_refresh()
    columns = ["period", "starts", "dimension", "key", "holder_kind", "kind", "amount", "holders"]
    first = sorted(ProgrammeRollup.objects.values_list(*columns))

    # when refreshed again with nothing posted in between
    rollups_refresh()

    # then the rows are the same
    assert sorted(ProgrammeRollup.objects.values_list(*columns)) == first


def test_a_closed_month_is_final_once_refreshed_after_it_closed():
    # given postings in January, refreshed on its last day
    with time_machine.travel(dt.datetime(2027, 1, 20, 12, tzinfo=KARACHI), tick=False) as clock:
        account = org_account()
        lot(account, 1_000, days=90)
        assert rollups_refresh() == [dt.date(2027, 1, 1)]

        # when February has begun, January is refreshed again, once
        clock.move_to(dt.datetime(2027, 2, 1, 9, tzinfo=KARACHI))
        assert months_to_refresh(now=timezone.now()) == [dt.date(2027, 1, 1), dt.date(2027, 2, 1)]
        rollups_refresh()

        # then it is final: later refreshes are of February alone
        assert months_to_refresh(now=timezone.now()) == [dt.date(2027, 2, 1)]
        refreshed = ProgrammeRollupRefresh.objects.get(period="month", starts=dt.date(2027, 1, 1))
        assert refreshed.refreshed_at >= dt.datetime(2027, 2, 1, tzinfo=KARACHI) + FINAL_AFTER


def test_a_grant_queues_a_refresh_when_it_commits(django_capture_on_commit_callbacks):
    # given an organisation
    account = org_account()

    # when it is granted credits and the transaction commits
    with django_capture_on_commit_callbacks(execute=True):
        lot(account, 900)

    # then the programme's figures include it without waiting for the beat
    rows = _programme_rows("programme", "grant")
    assert rows == {("", "organisation"): (900, 1, 1)}


def test_the_rebuild_restores_the_ledgers_sums_and_a_second_run_changes_nothing():
    # given roll-ups that were tampered with: a sum changed, a row removed, a row invented
    account = org_account()
    lot(account, 2_000)
    charge(account, 500, "rebuild-1")
    good = _rows(account)
    AccountRollup.objects.filter(account=account, kind="usage", period="day").update(amount=-1)
    AccountRollup.objects.filter(account=account, kind="grant", period="month").delete()
    AccountRollup.objects.create(
        account=account,
        period="day",
        starts=dt.date(2020, 1, 1),
        kind="expiry",
        rate_pkr_per_gpu_hour=Decimal("1.00"),
        amount=-5,
        entries=1,
    )

    # when rebuilt from the ledger
    assert account_rollups_rebuild() == 3

    # then the rows are the ledger's again, and rebuilding again changes nothing
    assert _rows(account) == good
    assert account_rollups_rebuild() == 0


def test_the_rebuild_command_rebuilds_both_tables(capsys):
    # given postings and no programme roll-ups yet
    _programme()
    ProgrammeRollup.objects.all().delete()

    # when the command runs twice
    call_command("credits_rollups_rebuild")
    first = capsys.readouterr().out
    call_command("credits_rollups_rebuild")
    second = capsys.readouterr().out

    # then the programme figures are back, and the second run found nothing to change
    assert _programme_rows("programme", "usage")[("", "student")] == (-50, 2, 2)
    assert "Account roll-ups: 0 rows written or removed" in first
    assert "Account roll-ups: 0 rows written or removed" in second


def test_reconciliation_reports_a_planted_drift_and_changes_nothing(caplog):
    # given two accounts, one of whose usage roll-up for the month was changed behind the ledger
    healthy, drifted = org_account(), org_account()
    for account in (healthy, drifted):
        lot(account, 1_000)
        charge(account, 100, f"reconcile:{account.pk}")
    month = timezone.localdate().replace(day=1)
    AccountRollup.objects.filter(
        account=drifted, period="month", kind="usage", starts=month
    ).update(amount=-90)

    # when the nightly reconciliation samples every account
    with caplog.at_level(logging.ERROR, logger="portal.credits.services.rollups"):
        result = account_rollups_reconcile(sample=1_000, rng=random.Random(7))

    # then the drift is reported, logged and audited, naming the account and both figures
    assert result["accounts"] == CreditAccount.objects.exclude(kind="system").count()
    [drift] = result["drift"]
    assert drift["account"] == drifted.pk
    assert (drift["period"], drift["kind"], drift["starts"]) == ("month", "usage", f"{month}")
    assert drift["ledger"] == {"amount": -100, "entries": 1}
    assert drift["rollup"] == {"amount": -90, "entries": 1}
    event = AuditEvent.objects.get(action="credits.rollup_drift")
    assert event.data["account"] == drifted.pk
    assert "credits roll-up drift" in caplog.text
    # and nothing was corrected behind anyone's back
    assert (
        AccountRollup.objects.get(
            account=drifted, period="month", kind="usage", starts=month
        ).amount
        == -90
    )


def test_reconciliation_of_books_that_agree_audits_nothing():
    account = org_account()
    lot(account, 1_000)
    charge(account, 10, "agree")

    result = account_rollups_reconcile(sample=1_000)

    assert result["drift"] == []
    assert not AuditEvent.objects.filter(action="credits.rollup_drift").exists()


def test_a_statements_opening_balance_comes_from_the_roll_ups_exactly():
    # given a January of grants at two rates and charges on both, and a quiet February
    with time_machine.travel(dt.datetime(2027, 1, 10, 12, tzinfo=KARACHI), tick=False) as clock:
        account = org_account()
        grant_issue(
            account=account,
            credit_seconds=100,
            rate_pkr_per_gpu_hour=Decimal("123.45"),
            expires_at=timezone.now() + dt.timedelta(days=5),
            source=CreditGrant.Source.APPLICATION,
            idempotency_key=f"opening:{uuid.uuid4()}",
        )
        lot(account, 10_000, days=90)
        for n in range(5):
            charge(account, 70, f"opening-{n}")
        clock.move_to(dt.datetime(2027, 2, 3, 12, tzinfo=KARACHI))

        # when February's statement is read
        with CaptureQueriesContext(connection) as captured:
            statement = statement_for(account=account, month=dt.date(2027, 2, 1))
        months = statement_months(account=account)

    # then its opening is January's closing, in credit-seconds and in PKR at each lot's rate
    # (the cheaper lot expired first and was used up: all that is left is at 750 PKR)
    assert statement.opening == 10_100 - 350
    assert statement.opening_pkr == Decimal("750.00") * (10_000 - 250) / 3600
    # and no entry before February was read to find it: every read of entries starts there
    unbounded = [
        q["sql"]
        for q in captured.captured_queries
        if 'FROM "credits_ledgerentry"' in q["sql"] and '"created_at" >=' not in q["sql"]
    ]
    assert unbounded == []
    assert months == [dt.date(2027, 2, 1), dt.date(2027, 1, 1)]


def test_beat_refreshes_the_programme_roll_ups_and_reconciles_once_a_day():
    # given postings this month
    _programme()
    refresh = settings.CELERY_BEAT_SCHEDULE["credits-rollups-refresh"]
    reconcile = settings.CELERY_BEAT_SCHEDULE["credits-rollups-reconcile"]

    # when beat's two credit roll-up tasks run
    assert refresh["task"] == rollups_refresh_task.name
    assert reconcile["task"] == rollups_reconcile_task.name
    refreshed = rollups_refresh_task.delay().get()
    reconciled = rollups_reconcile_task.delay().get()

    # then this month's programme figures are there, every interval, and the books agree
    assert refresh["schedule"] == settings.CREDITS_ROLLUP_REFRESH_SECONDS == 60
    assert reconcile["schedule"] == 24 * 60 * 60
    assert refreshed == [f"{timezone.localdate().replace(day=1)}"]
    assert _programme_rows("programme", "usage")[("", "organisation")] == (-220, 3, 2)
    assert reconciled["accounts"] == 4
    assert reconciled["drift"] == []
