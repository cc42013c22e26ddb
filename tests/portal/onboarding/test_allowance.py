"""The monthly student allowance (onboarding.allowance) and its Celery tasks."""

import pytest
from django.conf import settings

from portal.celery import app
from portal.credits.models import LedgerTransaction
from portal.onboarding import tasks
from tests.factories import StudentProfileFactory

pytestmark = pytest.mark.django_db


def test_the_allowance_tasks_keep_their_names_and_run_onboardings_code():
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
