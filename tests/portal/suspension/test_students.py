"""Suspending and reactivating a student: their sandboxes stop, their keys answer 401, their
sessions end and they cannot sign in; a reactivation restores it all and grants the month's
allowance."""

import pytest
from django.test import Client
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.credits.models import CreditGrant, LedgerEntry
from portal.credits.services import account_for_student, adjustment_post
from portal.suspension.services import reactivate, suspend
from portal.users.services import programme_manager_grant
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from tests.factories import PASSWORD, StudentProfileFactory
from tests.portal.api.conftest import key_client, make_key
from tests.portal.suspension.conftest import HOUR, ME, Status, is_signed_in, signed_in
from tests.sandboxes.launcher.helpers import committed, image, profile

pytestmark = pytest.mark.django_db


# --- Suspending a student -------------------------------------------------------------------


def test_suspending_a_student_stops_keys_sessions_and_sign_in(
    pm_client, programme_manager, student, hub_tasks, django_capture_on_commit_callbacks
):
    person = student["user"]
    browser = signed_in(person)
    assert is_signed_in(browser)
    _key, personal_key = make_key(user=person)
    api = key_client(personal_key)
    assert api.get(ME).status_code == 200
    hub_tasks.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = pm_client.post(
            reverse("dashboard:student_suspend", args=[person.hub_username]),
            {"reason": "Sharing the account"},
        )

    assert response.status_code == 302
    person.refresh_from_db()
    assert person.is_active is False
    running = Sandbox.objects.get(pk=student["running"].pk)
    assert running.status == Status.STOPPING
    assert hub_tasks == [
        ("sandbox_stop", (running.pk,), {"reason": {"code": "suspended", "params": {}}})
    ]
    assert api.get(ME).status_code == 401
    assert not is_signed_in(browser)
    assert not Client().login(email=person.email, password=PASSWORD)
    event = AuditEvent.objects.get(action="student.suspended")
    assert (event.actor, event.target_id) == (programme_manager, str(person.pk))
    assert event.data["reason"] == "Sharing the account"
    assert event.data["sandboxes_stopped"] == [str(running.public_id)]
    assert event.data["sessions_ended"] >= 1
    # the directory shows it
    listed = pm_client.get(reverse("dashboard:students"), {"status": "suspended"})
    assert [s.user_id for s in listed.context["page"].object_list] == [person.pk]

    # when reactivated, the key works again and the person can sign in
    response = pm_client.post(
        reverse("dashboard:student_reactivate", args=[person.hub_username]),
        {"reason": "Explained"},
    )
    assert response.status_code == 302
    assert api.get(ME).status_code == 200
    again = Client()
    assert again.login(email=person.email, password=PASSWORD)
    assert is_signed_in(again)
    assert AuditEvent.objects.filter(action="student.reactivated", actor=programme_manager).exists()


def test_a_reactivated_student_gets_the_allowance_the_month_skipped(
    programme_manager, django_capture_on_commit_callbacks, settings
):
    settings.STUDENT_MONTHLY_ALLOWANCE_GPU_HOURS = 5
    person = StudentProfileFactory().user
    suspend(subject=person, reason="x", acting_user=programme_manager)
    account = account_for_student(person)
    assert not CreditGrant.objects.filter(account=account).exists()

    with django_capture_on_commit_callbacks(execute=True):
        reactivate(subject=person, reason="ok", acting_user=programme_manager)

    grant = CreditGrant.objects.get(account=account)
    assert (grant.source, grant.amount) == (CreditGrant.Source.ALLOWANCE, 5 * HOUR)


def test_student_suspension_refusals_change_nothing(pm_client, programme_manager, student):
    person = student["user"]
    other_manager = StudentProfileFactory().user
    programme_manager_grant(user=other_manager, acting_user=None)
    url = reverse("dashboard:student_suspend", args=[person.hub_username])

    assert pm_client.post(url, {}).status_code == 400
    assert pm_client.get(url).status_code == 405
    assert (
        pm_client.post(
            reverse("dashboard:student_suspend", args=["nobody-xyz"]), {"reason": "x"}
        ).status_code
        == 404
    )
    refused = pm_client.post(
        reverse("dashboard:student_suspend", args=[other_manager.hub_username]), {"reason": "x"}
    )
    assert refused.status_code == 403
    with pytest.raises(PermissionDenied):
        suspend(subject=person, reason="x", acting_user=person)

    person.refresh_from_db()
    other_manager.refresh_from_db()
    assert person.is_active
    assert other_manager.is_active
    assert Sandbox.objects.get(pk=student["running"].pk).status == Status.RUNNING
    assert not AuditEvent.objects.filter(action="student.suspended").exists()


def test_a_suspended_student_cannot_launch_or_receive_credits(programme_manager, student):
    person = student["user"]
    launcher.sandbox_stop(sandbox=student["running"], acting_user=person)
    suspend(subject=person, reason="x", acting_user=programme_manager)
    person.refresh_from_db()
    before = (Sandbox.objects.count(), LedgerEntry.objects.count())
    with pytest.raises(PermissionDenied, match="suspended"):
        committed(launcher.sandbox_launch, user=person, image=image(), profile=profile("cpu-small"))
    with pytest.raises(ApplicationError, match="suspended"):
        adjustment_post(
            account=student["account"],
            credit_seconds=HOUR,
            reason="goodwill",
            idempotency_key="adjustment:suspended-student",
            acting_user=programme_manager,
        )
    assert (Sandbox.objects.count(), LedgerEntry.objects.count()) == before
