"""Request logging: nothing kept unless the organisation opted in, deleted after its retention,
changed only by the organisation's owner or admins, audited."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from inference.usage.models import ModelRequest, RequestLog, RequestLogPolicy
from inference.usage.services import (
    UsageError,
    request_hold,
    request_log_policy_set,
    request_log_record,
    request_logs_delete_expired,
)
from portal.audit.models import AuditEvent
from portal.core.exceptions import PermissionDenied
from portal.organisations.models import Role
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

from .conftest import fund, personal_key

pytestmark = pytest.mark.django_db

BODY = {"model": "tiny-chat", "messages": [{"role": "user", "content": "سلام"}]}


def held(account, model, key):
    return request_hold(
        request_id=f"req-{uuid.uuid4().hex}",
        account=account,
        model=model,
        endpoint=ModelRequest.Endpoint.CHAT,
        stream=False,
        max_cost_microcredits=0,
        api_key=key,
    )


@pytest.fixture
def admin(organisation):
    return MembershipFactory(organisation=organisation, role=Role.ADMIN).user


def test_nothing_is_kept_by_default(org_account, model, key):
    request = held(org_account, model, key)
    kept = request_log_record(request_id=request.request_id, request_body=BODY, response_text="hi")
    assert kept is False
    assert RequestLog.objects.count() == 0


def test_an_opted_in_organisation_keeps_its_requests_for_the_retention(
    org_account, organisation, model, key, admin
):
    # given the organisation keeps logs for 7 days
    request_log_policy_set(organisation=organisation, retention_days=7, acting_user=admin)
    request = held(org_account, model, key)
    # when a request's content is recorded (with NUL characters in it)
    kept = request_log_record(
        request_id=request.request_id,
        request_body={**BODY, "stop": ["a\x00b"], "k\x00": "v"},
        response_text="answer\x00 here",
    )
    # then it is kept, without the NULs, to be deleted in 7 days
    assert kept is True
    log = RequestLog.objects.get()
    assert log.organisation == organisation
    assert log.request_body["stop"] == ["ab"]
    assert log.request_body["k"] == "v"
    assert log.request_body["messages"][0]["content"] == "سلام"
    assert log.response_text == "answer here"
    assert abs(log.delete_after - (timezone.now() + dt.timedelta(days=7))) < dt.timedelta(minutes=1)
    # and recording it again keeps nothing more
    assert not request_log_record(
        request_id=request.request_id, request_body=BODY, response_text=""
    )
    assert RequestLog.objects.count() == 1


def test_logs_are_deleted_after_their_retention(org_account, organisation, model, key, admin):
    request_log_policy_set(organisation=organisation, retention_days=1, acting_user=admin)
    request = held(org_account, model, key)
    request_log_record(request_id=request.request_id, request_body=BODY, response_text="x")
    assert request_logs_delete_expired() == 0
    assert request_logs_delete_expired(now=timezone.now() + dt.timedelta(hours=23)) == 0
    assert RequestLog.objects.count() == 1
    assert request_logs_delete_expired(now=timezone.now() + dt.timedelta(days=1, minutes=1)) == 1
    assert RequestLog.objects.count() == 0
    assert ModelRequest.objects.filter(pk=request.pk).exists()  # the usage record stays


def test_the_deletion_task_runs_hourly_and_deletes(
    settings, org_account, organisation, model, key, admin
):
    from inference.usage.tasks import request_logs_delete_expired_task

    entry = settings.CELERY_BEAT_SCHEDULE["usage-request-logs-delete-expired"]
    assert entry["task"] == "usage.request_logs_delete_expired"
    request_log_policy_set(organisation=organisation, retention_days=1, acting_user=admin)
    request = held(org_account, model, key)
    request_log_record(request_id=request.request_id, request_body=BODY, response_text="x")
    RequestLog.objects.update(delete_after=timezone.now() - dt.timedelta(seconds=1))
    assert request_logs_delete_expired_task.apply().get() == 1


def test_opting_out_deletes_what_was_kept(org_account, organisation, model, key, admin):
    request_log_policy_set(organisation=organisation, retention_days=30, acting_user=admin)
    request = held(org_account, model, key)
    request_log_record(request_id=request.request_id, request_body=BODY, response_text="x")
    request_log_policy_set(organisation=organisation, retention_days=0, acting_user=admin)
    assert RequestLog.objects.count() == 0


def test_shortening_the_retention_shortens_what_is_kept(
    org_account, organisation, model, key, admin
):
    request_log_policy_set(organisation=organisation, retention_days=30, acting_user=admin)
    request = held(org_account, model, key)
    request_log_record(request_id=request.request_id, request_body=BODY, response_text="x")
    request_log_policy_set(organisation=organisation, retention_days=2, acting_user=admin)
    log = RequestLog.objects.get()
    assert log.delete_after <= timezone.now() + dt.timedelta(days=2)


def test_a_students_own_requests_are_never_logged(model, student, student_account):
    # even when an organisation the student belongs to opted in
    organisation = OrganisationFactory()
    MembershipFactory(organisation=organisation, user=student, role=Role.ADMIN)
    request_log_policy_set(organisation=organisation, retention_days=30, acting_user=student)
    fund(student_account, 1)
    request = held(student_account, model, personal_key(student))
    assert not request_log_record(
        request_id=request.request_id, request_body=BODY, response_text=""
    )
    assert RequestLog.objects.count() == 0


@pytest.mark.parametrize("days", [-1, 91, 1.5, "7", True, None])
def test_a_retention_out_of_bounds_is_refused_and_changes_nothing(organisation, admin, days):
    with pytest.raises(UsageError):
        request_log_policy_set(organisation=organisation, retention_days=days, acting_user=admin)
    assert RequestLogPolicy.objects.count() == 0
    assert AuditEvent.objects.filter(action="model.request_logging_set").count() == 0


def test_the_bounds_are_accepted_and_audited(organisation, admin):
    request_log_policy_set(organisation=organisation, retention_days=90, acting_user=admin)
    request_log_policy_set(organisation=organisation, retention_days=0, acting_user=admin)
    events = AuditEvent.objects.filter(action="model.request_logging_set").order_by("pk")
    assert [e.data for e in events] == [
        {"retention_days": 90, "before": 0},
        {"retention_days": 0, "before": 90},
    ]
    assert all(e.actor == admin for e in events)
    assert RequestLogPolicy.objects.get().changed_by == admin


@pytest.mark.parametrize("role", [Role.MEMBER, None], ids=["member", "outsider"])
def test_only_owners_and_admins_may_opt_in(organisation, role):
    person = UserFactory()
    if role is not None:
        MembershipFactory(organisation=organisation, user=person, role=role)
    with pytest.raises(PermissionDenied):
        request_log_policy_set(organisation=organisation, retention_days=30, acting_user=person)
    assert RequestLogPolicy.objects.count() == 0
    assert AuditEvent.objects.filter(action="model.request_logging_set").count() == 0


def test_an_admin_of_another_organisation_may_not_opt_this_one_in(organisation):
    other_admin = MembershipFactory(organisation=OrganisationFactory(), role=Role.OWNER).user
    with pytest.raises(PermissionDenied):
        request_log_policy_set(
            organisation=organisation, retention_days=30, acting_user=other_admin
        )
    assert RequestLogPolicy.objects.count() == 0
