"""The monthly student allowance (onboarding.allowance): once a month per student, from the
programme's default or the cohort's override, expiring with the month; and its Celery tasks."""

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from portal.celery import app
from portal.credits.models import CreditAccount, CreditGrant, LedgerTransaction
from portal.credits.services import account_for_student
from portal.onboarding import tasks
from portal.onboarding.allowance import student_allowance_grant
from tests.factories import CohortFactory, StudentProfileFactory, UserFactory
from tests.portal.credits.helpers import assert_books_consistent, balance_of, books

pytestmark = pytest.mark.django_db

KARACHI = zoneinfo.ZoneInfo("Asia/Karachi")


def _next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def test_a_student_gets_the_allowance_once_a_month(settings):
    # given a student in a cohort without an override
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 10
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    month = timezone.localdate()

    # when the allowance is granted twice in the month
    first = student_allowance_grant(user=student)
    before = books()
    again = student_allowance_grant(user=student, month=month.replace(day=1))

    # then one lot of 10 GPU-hours exists, under the student's key for the month
    assert again.pk == first.pk
    assert books() == before
    txn = LedgerTransaction.objects.get(
        idempotency_key=f"student-allowance:{student.pk}:{month:%Y-%m}"
    )
    assert txn.kind == LedgerTransaction.Kind.ALLOWANCE
    assert first.source == CreditGrant.Source.ALLOWANCE
    assert first.amount == 10 * 3600
    account = account_for_student(student)
    assert first.account == account
    assert account.kind == CreditAccount.Kind.STUDENT
    assert balance_of(account) == 10 * 3600
    assert_books_consistent()


def test_a_change_of_the_cohorts_allowance_mid_month_does_not_grant_again(settings):
    # given a student who got this month's allowance from a cohort giving 3 GPU-hours
    cohort = CohortFactory(monthly_allowance_gpu_hours=3)
    student = StudentProfileFactory(cohort=cohort).user
    first = student_allowance_grant(user=student)
    before = books()

    # when the cohort's allowance changes and the monthly job runs again
    cohort.monthly_allowance_gpu_hours = 5
    cohort.save(update_fields=["monthly_allowance_gpu_hours"])
    again = student_allowance_grant(user=student)

    # then this month's lot stays the one granted, and nothing is written
    assert again.pk == first.pk
    assert again.amount == 3 * 3600
    assert books() == before


def test_the_allowance_expires_at_the_end_of_the_month_in_karachi():
    # given a student
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    this_month = timezone.localdate()
    december = dt.date(this_month.year, 12, 1)

    # when this month's and December's allowances are granted
    current = student_allowance_grant(user=student)
    year_end = student_allowance_grant(user=student, month=december)

    # then each expires at midnight, Karachi time, when the next month starts
    following = _next_month(this_month)
    assert current.expires_at == dt.datetime(following.year, following.month, 1, tzinfo=KARACHI)
    assert year_end.expires_at == dt.datetime(this_month.year + 1, 1, 1, tzinfo=KARACHI)
    assert year_end.expires_at == dt.datetime(this_month.year, 12, 31, 19, 0, tzinfo=dt.UTC)


def test_next_months_allowance_is_a_new_lot():
    # given a student with this month's allowance
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    this_month = timezone.localdate()
    current = student_allowance_grant(user=student, month=this_month)

    # when next month's is granted
    following = student_allowance_grant(user=student, month=_next_month(this_month))

    # then it is another lot under another key
    assert following.pk != current.pk
    assert LedgerTransaction.objects.filter(
        idempotency_key=f"student-allowance:{student.pk}:{_next_month(this_month):%Y-%m}"
    ).exists()


def test_the_cohorts_allowance_wins_over_the_programme_default(settings):
    # given a cohort that gives 3 GPU-hours a month
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 10
    student = StudentProfileFactory(cohort=CohortFactory(monthly_allowance_gpu_hours=3)).user

    # when the allowance is granted
    grant = student_allowance_grant(user=student)

    # then it is the cohort's
    assert grant.amount == 3 * 3600


def test_a_cohort_with_no_allowance_gets_none():
    # given a cohort whose allowance is zero
    student = StudentProfileFactory(cohort=CohortFactory(monthly_allowance_gpu_hours=0)).user
    before = books()

    # when the allowance is granted
    grant = student_allowance_grant(user=student)

    # then there is none, and nothing is written
    assert grant is None
    assert books() == before


@pytest.mark.parametrize("case", ["not-a-student", "inactive", "month-over"])
def test_no_allowance_for_non_students_inactive_people_or_past_months(case):
    # given a person who should get nothing
    if case == "not-a-student":
        person = UserFactory()
    else:
        person = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user
    if case == "inactive":
        person.is_active = False
        person.save(update_fields=["is_active"])
    month = timezone.localdate()
    if case == "month-over":
        month = (month.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    before = books()

    # when the allowance is granted
    grant = student_allowance_grant(user=person, month=month)

    # then nothing is
    assert grant is None
    assert books() == before


def test_the_allowance_tasks_keep_their_names_and_run_onboardings_code(settings):
    # given the tasks Celery knows, as a worker discovers them
    app.loader.import_default_modules()

    # then the daily beat entry and the task run on joining are onboarding's, under the names
    # they had in credits (queued messages and the beat schedule's rows use them)
    beat = settings.CELERY_BEAT_SCHEDULE["credits-student-allowances"]
    assert beat["task"] == tasks.student_allowances_grant_month_task.name
    assert app.tasks[beat["task"]].run.__module__ == "portal.onboarding.tasks"
    assert tasks.student_allowance_grant_task.name == "credits.student_allowance_grant"
    assert app.tasks["credits.student_allowance_grant"].run.__module__ == "portal.onboarding.tasks"


def test_the_tasks_grant_the_allowance_once():
    # given a student
    student = StudentProfileFactory(cohort__monthly_allowance_gpu_hours=None).user

    # when the task for one student and the monthly run both run, twice
    assert tasks.student_allowance_grant_task.delay(user_id=student.pk).get() is True
    assert tasks.student_allowance_grant_task.delay(user_id=student.pk).get() is True
    tasks.student_allowances_grant_month_task.delay().get()

    # then the student has one allowance, and a person who is gone gets none
    assert LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.ALLOWANCE).count() == 1
    assert tasks.student_allowance_grant_task.delay(user_id=10**9).get() is False
