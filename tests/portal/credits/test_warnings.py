"""Low-balance warnings: each threshold a lot falls to, once, mailed after commit."""

import pytest
from django.db import transaction

from portal.credits.models import CreditWarning
from portal.credits.services import account_for_student, warnings_check
from portal.onboarding.allowance import student_allowance_grant
from tests.factories import CohortFactory, StudentProfileFactory
from tests.portal.credits.helpers import books, charge, lot, org_account, remaining_of

pytestmark = pytest.mark.django_db


def test_warnings_once_per_threshold_mailed_to_owners_and_admins_after_commit(
    organisation,
    owner,
    admin_member,
    member,
    mailoutbox,
    django_capture_on_commit_callbacks,
    settings,
):
    # given a lot of 1000 for an organisation with an owner, an admin and a member
    settings.CREDITS_WARNING_THRESHOLDS_PERCENT = [20, 5]
    account = org_account(organisation)
    grant = lot(account, 1000)

    # when usage leaves 21%, nothing is warned
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 790, "use-1")
    assert not CreditWarning.objects.exists()
    assert mailoutbox == []

    # when usage leaves exactly 20%, the 20% warning is recorded and mailed after commit
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        charge(account, 10, "use-2")
        assert mailoutbox == []  # not before the commit
    assert len(callbacks) == 2
    assert list(CreditWarning.objects.values_list("grant_id", "threshold_percent")) == [
        (grant.pk, 20)
    ]
    assert sorted(m.to[0] for m in mailoutbox) == sorted([owner.email, admin_member.email])
    assert all("20%" in m.subject for m in mailoutbox)

    # when usage continues above 5%, nothing more is sent
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 140, "use-3")
        charge(account, 1, "use-3b")
    assert CreditWarning.objects.count() == 1
    assert mailoutbox == []

    # when it falls to 5%, the 5% warning goes out, once
    assert remaining_of(grant) == 59
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 9, "use-4")
        charge(account, 1, "use-5")
    assert sorted(CreditWarning.objects.values_list("threshold_percent", flat=True)) == [5, 20]
    assert sorted(m.to[0] for m in mailoutbox) == sorted([owner.email, admin_member.email])
    assert all("5%" in m.subject for m in mailoutbox)


def test_falling_past_both_thresholds_at_once_records_both(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given a lot of 1000
    account = org_account(organisation)
    grant = lot(account, 1000)

    # when one charge uses 990
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 990, "use-1")

    # then both thresholds are recorded and the owner hears of each
    assert sorted(
        CreditWarning.objects.filter(grant=grant).values_list("threshold_percent", flat=True)
    ) == [5, 20]
    assert len(mailoutbox) == 2
    assert {m.to[0] for m in mailoutbox} == {owner.email}


def test_each_lot_is_warned_about_on_its_own(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given two lots of 100 and 1000
    account = org_account(organisation)
    small = lot(account, 100, days=5)
    big = lot(account, 1000, days=10)

    # when a charge empties the small lot and takes 10% of the big one
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 200, "use-1")

    # then only the small lot is warned about
    assert sorted(CreditWarning.objects.values_list("grant_id", "threshold_percent")) == [
        (small.pk, 5),
        (small.pk, 20),
    ]
    # and when the big lot falls below 20% it gets its own warning
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 750, "use-2")
    assert CreditWarning.objects.filter(grant=big, threshold_percent=20).exists()
    assert len(mailoutbox) == 3


def test_no_warning_mail_when_the_charge_is_rolled_back(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given a lot of 1000
    account = org_account(organisation)
    lot(account, 1000)
    before = books()

    def charge_then_fail():
        with transaction.atomic():
            charge(account, 1000, "use-1")
            raise RuntimeError("the caller failed after charging")

    # when a charge that crosses both thresholds is rolled back by its caller
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        charge_then_fail()

    # then no warning is recorded and no mail goes out
    assert books() == before
    assert mailoutbox == []


def test_a_student_is_warned_directly(mailoutbox, django_capture_on_commit_callbacks):
    # given a student with an allowance
    student = StudentProfileFactory(cohort=CohortFactory(monthly_allowance_gpu_hours=1)).user
    student_allowance_grant(user=student)
    account = account_for_student(student)

    # when the student uses 90% of it
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 3240, "use-1")

    # then the student is mailed
    assert [m.to for m in mailoutbox] == [[student.email]]


def test_warnings_check_is_idempotent(
    organisation, owner, mailoutbox, django_capture_on_commit_callbacks
):
    # given a lot below 20% whose warning was sent
    account = org_account(organisation)
    grant = lot(account, 1000)
    with django_capture_on_commit_callbacks(execute=True):
        charge(account, 850, "use-1")
    mailoutbox.clear()

    # when the check runs again
    with django_capture_on_commit_callbacks(execute=True):
        created = warnings_check(grant_ids=[grant.pk])

    # then nothing new is recorded or sent
    assert created == []
    assert CreditWarning.objects.count() == 1
    assert mailoutbox == []
