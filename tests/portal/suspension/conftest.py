"""The programme's world for the suspension tests (and the directory pages' tests, which import
these): a startup and a student with credits, usage and running sandboxes, browsers signed in
as people sign in, and the hub's Celery tasks recorded instead of run. On real PostgreSQL."""

import datetime as dt
import uuid

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.credits.services import account_for_organisation, account_for_student, usage_charge
from portal.credits.units import month_bounds
from portal.organisations.models import Role
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from tests.factories import (
    PASSWORD,
    CohortFactory,
    MembershipFactory,
    StudentProfileFactory,
    UniversityFactory,
)
from tests.portal.credits.helpers import lot
from tests.sandboxes.launcher.helpers import (
    catalogue,
    committed,
    image,
    profile,
    tasks_recorded,
)

HOUR = 3600
ME = "/api/v1/me"
Status = Sandbox.Status


@pytest.fixture
def hub_tasks(monkeypatch):
    """The Celery tasks that would talk to the hub are recorded instead of run."""
    return tasks_recorded(monkeypatch, [], "sandbox_start", "sandbox_stop")


@pytest.fixture(autouse=True)
def _hub_tasks_recorded(hub_tasks):
    """Every suspension test records the hub's tasks (the directory pages' tests get them with
    `startup` and `student`)."""
    return hub_tasks


@pytest.fixture
def pm_client(client, programme_manager):
    client.force_login(programme_manager)
    return client


def signed_in(user) -> Client:
    """A browser signed in through the sign-in form, as people sign in (allauth records the
    session then; the test client's force_login would skip that)."""
    browser = Client()
    response = browser.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.content[:300]
    return browser


def is_signed_in(browser: Client) -> bool:
    """Whether the browser's next request is made by someone (its session still works)."""
    response = browser.get(reverse("apikeys:list"))
    return response.wsgi_request.user.is_authenticated


def running_sandbox(user, organisation=None) -> Sandbox:
    sandbox = committed(
        launcher.sandbox_launch,
        user=user,
        image=image(),
        profile=profile("cpu-small"),
        organisation=organisation,
    )
    launcher.sandbox_mark_running(sandbox_id=sandbox.pk)
    sandbox.refresh_from_db()
    return sandbox


def stopped_sandbox(user, organisation=None) -> Sandbox:
    sandbox = running_sandbox(user, organisation)
    launcher.sandbox_mark_stopped(sandbox_id=sandbox.pk, reason="done")
    return sandbox


def charge(account, seconds: int, *, at: dt.datetime | None = None) -> None:
    def post():
        usage_charge(
            account=account,
            credit_seconds=seconds,
            idempotency_key=f"test-usage:{uuid.uuid4()}",
            metadata={"sandbox": "test", "profile": "cpu-small"},
        )

    if at is None:
        post()
        return
    with time_machine.travel(at, tick=False):
        post()


def last_month() -> dt.datetime:
    return month_bounds(timezone.localdate())[0] - dt.timedelta(hours=2)


@pytest.fixture
def startup(hub_tasks):
    """An organisation with an owner, an admin and a member, 120 GPU-hours granted in two lots,
    2 h used this month and 1 h last month, one running and one stopped sandbox."""
    catalogue()
    owner = MembershipFactory(role=Role.OWNER)
    organisation = owner.organisation
    admin = MembershipFactory(organisation=organisation, role=Role.ADMIN)
    member = MembershipFactory(organisation=organisation, role=Role.MEMBER)
    account = account_for_organisation(organisation)
    lot(account, 100 * HOUR)
    lot(account, 20 * HOUR)
    charge(account, 2 * HOUR)
    charge(account, 1 * HOUR, at=last_month())
    running = running_sandbox(owner.user)
    stopped_sandbox(member.user)
    return {
        "organisation": organisation,
        "account": account,
        "owner": owner.user,
        "admin": admin.user,
        "member": member.user,
        "running": running,
    }


@pytest.fixture
def student(hub_tasks):
    """A student with a 10 GPU-hour allowance, half an hour used this month, one running
    sandbox."""
    catalogue()
    profile_ = StudentProfileFactory(
        university=UniversityFactory(name="NUST"), cohort=CohortFactory(name="Bootcamp")
    )
    person = profile_.user
    account = account_for_student(person)
    lot(account, 10 * HOUR)
    charge(account, HOUR // 2)
    running = running_sandbox(person)
    return {"profile": profile_, "user": person, "account": account, "running": running}


# --- Who may see and do what ------------------------------------------------------------------


@pytest.fixture
def people(programme_manager_without_mfa):
    return {
        "student": StudentProfileFactory().user,
        "startup member": MembershipFactory(role=Role.MEMBER).user,
        "organisation admin": MembershipFactory(role=Role.ADMIN).user,
        "organisation owner": MembershipFactory(role=Role.OWNER).user,
        "programme manager without MFA": programme_manager_without_mfa,
    }


ROLES = [
    "anonymous",
    "student",
    "startup member",
    "organisation admin",
    "organisation owner",
    "programme manager without MFA",
]


def expected_denial(response, role: str) -> None:
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    elif role == "programme manager without MFA":
        assert response.status_code == 302
        assert response["Location"] == reverse("mfa_activate_totp")
    else:
        assert response.status_code == 403
