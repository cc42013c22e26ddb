"""The programme directory: organisations and students with their figures, their detail pages,
and suspension and reactivation (sandboxes stop, keys answer 401, sessions end; all undone by a
reactivation), on real PostgreSQL and the real Redis channel layer."""

import datetime as dt
import json
import threading
import uuid

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.apikeys.models import ApiKey
from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.credits.models import CreditGrant, LedgerEntry
from portal.credits.services import (
    account_for_organisation,
    account_for_student,
    adjustment_post,
    usage_charge,
)
from portal.credits.units import month_bounds
from portal.onboarding.services import student_reactivate, student_suspend
from portal.organisations.models import Organisation, Role
from portal.organisations.services import organisation_reactivate, organisation_suspend
from portal.users.models import User
from portal.users.services import programme_manager_grant
from sandboxes.launcher import services as launcher
from sandboxes.launcher.models import Sandbox
from sandboxes.live.broadcast import organisation_group, user_group
from sandboxes.live.consumers import LiveConsumer
from tests.conftest import totp_activate
from tests.factories import (
    PASSWORD,
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
    UniversityFactory,
    UserFactory,
)
from tests.portal.api.conftest import key_client, make_key
from tests.portal.credits.helpers import lot
from tests.sandboxes.launcher.helpers import catalogue, committed, image, profile
from tests.sandboxes.live.conftest import live_socket

pytestmark = pytest.mark.django_db
HOUR = 3600
ME = "/api/v1/me"
Status = Sandbox.Status


@pytest.fixture(autouse=True)
def hub_tasks(monkeypatch):
    """The Celery tasks that would talk to the hub are recorded instead of run."""
    from sandboxes.launcher import tasks

    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def delay(self, *args, **kwargs):
            calls.append((self.name, args, kwargs))

    for name in ("sandbox_start", "sandbox_stop"):
        monkeypatch.setattr(tasks, name, Recorder(name))
    return calls


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
def startup():
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
def student():
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


# --- Organisations list ---------------------------------------------------------------------


def test_the_organisations_list_shows_each_organisations_figures(pm_client, startup):
    # given the startup and a suspended organisation with nothing yet
    idle = OrganisationFactory(is_active=False, legal_name="Idle (Private) Limited")
    # when the programme manager opens the directory
    response = pm_client.get(reverse("dashboard:organisations"))
    # then each figure is right, in credit-seconds and on the page in GPU-hours
    assert response.status_code == 200
    listed = {o.pk: o for o in response.context["page"].object_list}
    busy = listed[startup["organisation"].pk]
    assert busy.balance == 117 * HOUR
    assert busy.granted_total == 120 * HOUR
    assert busy.used_this_month == 2 * HOUR
    assert busy.members == 3
    assert busy.sandboxes_live == 1
    assert busy.account_public_id == startup["account"].public_id
    empty = listed[idle.pk]
    assert (empty.balance, empty.granted_total, empty.used_this_month) == (0, 0, 0)
    assert (empty.members, empty.sandboxes_live) == (0, 0)
    html = response.content.decode()
    assert "117.00" in html
    assert "120.00" in html
    assert reverse("dashboard:organisation", args=[startup["organisation"].public_id]) in html
    assert "Suspended" in html


def _organisation_with_figures(n: int) -> None:
    owner = MembershipFactory(role=Role.OWNER)
    MembershipFactory(organisation=owner.organisation)
    account = account_for_organisation(owner.organisation)
    lot(account, (n + 1) * HOUR)
    charge(account, 60)


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("page", ["dashboard:organisations", "dashboard:students"])
def test_a_directory_page_costs_the_same_queries_for_3_rows_as_for_30(pm_client, page):
    # given 3 organisations and 3 students, each with credits, usage and members
    def add(count: int) -> None:
        for n in range(count):
            _organisation_with_figures(n)
            person = StudentProfileFactory().user
            lot(account_for_student(person), HOUR)
            charge(account_for_student(person), 60)

    add(3)
    url = reverse(page)
    pm_client.get(url)  # warm: the session's first request records it (allauth usersessions)
    few = _queries(pm_client, url)
    # when there are ten times as many
    add(27)
    many = _queries(pm_client, url)
    # then the page costs the same number of queries, and a small one
    assert many == few
    assert few <= 15, few


def test_the_organisations_page_stays_within_its_query_bound_at_full_page(
    pm_client, django_assert_max_num_queries
):
    for n in range(55):
        _organisation_with_figures(n)
    pm_client.get(reverse("dashboard:organisations"))
    with django_assert_max_num_queries(15):
        response = pm_client.get(reverse("dashboard:organisations"))
    assert len(response.context["page"].object_list) == 50  # 50 a page
    assert response.context["page"].paginator.num_pages == 2


def test_organisation_filters_and_ordering(pm_client):
    # given organisations in different sectors, provinces and states
    a = OrganisationFactory(
        legal_name="Alpha Agritech", sector="agriculture", province="sindh", is_active=True
    )
    b = OrganisationFactory(legal_name="Beta Health", sector="health", province="punjab")
    c = OrganisationFactory(legal_name="Gamma Health", sector="health", province="sindh")
    lot(account_for_organisation(b), 50 * HOUR)
    lot(account_for_organisation(c), 5 * HOUR)
    Organisation.objects.filter(pk=c.pk).update(is_active=False)  # suspended since

    def listed(**params) -> list[str]:
        response = pm_client.get(reverse("dashboard:organisations"), params)
        assert response.status_code == 200
        return [o.legal_name for o in response.context["page"].object_list]

    # then each filter narrows, alone and together
    assert listed(q="health") == ["Beta Health", "Gamma Health"]
    assert listed(q=a.secp_registration_number) == ["Alpha Agritech"]
    assert listed(sector="health", province="sindh") == ["Gamma Health"]
    assert listed(status="suspended") == ["Gamma Health"]
    assert listed(status="active") == ["Alpha Agritech", "Beta Health"]
    assert listed(ordering="-balance") == ["Beta Health", "Gamma Health", "Alpha Agritech"]
    assert listed(ordering="balance")[0] == "Alpha Agritech"
    # and a filter that is not a choice is answered 400 with the whole list
    response = pm_client.get(reverse("dashboard:organisations"), {"sector": "nonsense"})
    assert response.status_code == 400
    assert len(response.context["page"].object_list) == 3


def test_pagination_links_keep_the_filters(pm_client):
    for n in range(52):
        OrganisationFactory(legal_name=f"Health {n:02d}", sector="health")
    OrganisationFactory(legal_name="Elsewhere", sector="media")
    response = pm_client.get(reverse("dashboard:organisations"), {"sector": "health"})
    assert response.context["page"].paginator.count == 52
    assert "sector=health&amp;page=2" in response.content.decode()
    second = pm_client.get(reverse("dashboard:organisations"), {"sector": "health", "page": 2})
    assert [o.legal_name for o in second.context["page"].object_list] == ["Health 50", "Health 51"]


# --- Organisation detail --------------------------------------------------------------------


def test_the_organisation_page_shows_members_credits_sandboxes_keys_and_events(pm_client, startup):
    organisation = startup["organisation"]
    key, secret = make_key(organisation=organisation, acting_user=startup["owner"], name="ci")
    response = pm_client.get(reverse("dashboard:organisation", args=[organisation.public_id]))
    assert response.status_code == 200
    context = response.context
    assert context["organisation"].balance == 117 * HOUR
    assert {(m.user, m.role) for m in context["members"]} == {
        (startup["owner"], Role.OWNER),
        (startup["admin"], Role.ADMIN),
        (startup["member"], Role.MEMBER),
    }
    assert sorted(g.amount for g in context["grants"]) == [20 * HOUR, 100 * HOUR]
    assert [e.amount for e in context["ledger"]][:1] == [-2 * HOUR]  # newest first
    assert len(context["ledger"]) == 4
    sandboxes = list(context["sandboxes"])
    assert sandboxes[0] == startup["running"]
    assert [s.status for s in sandboxes] == [Status.RUNNING, Status.STOPPED]
    assert [k.name for k in context["api_keys"]] == ["ci"]
    assert "apikey.created" in {e.action for e in context["events"]}
    html = response.content.decode()
    assert reverse("dashboard:account", args=[startup["account"].public_id]) in html
    assert key.display_prefix in html
    assert secret not in html
    assert ApiKey.objects.get(pk=key.pk).secret_hash not in html
    assert 'name="reason"' in html  # the suspension form
    assert "data-confirm" in html


def test_an_unknown_organisation_is_404(pm_client):
    assert pm_client.get(reverse("dashboard:organisation", args=[uuid.uuid4()])).status_code == 404


# --- Students -------------------------------------------------------------------------------


def test_the_students_list_shows_each_students_figures_and_filters(pm_client, student):
    other = StudentProfileFactory(user=UserFactory(email="zara@uni.edu.pk", name="Zara Khan"))
    User.objects.filter(pk=other.user.pk).update(is_active=False)
    url = reverse("dashboard:students")

    response = pm_client.get(url)
    assert response.status_code == 200
    listed = {s.user_id: s for s in response.context["page"].object_list}
    mine = listed[student["user"].pk]
    assert mine.balance == 10 * HOUR - HOUR // 2
    assert mine.used_this_month == HOUR // 2
    assert mine.sandboxes_live == 1
    assert (listed[other.user.pk].balance, listed[other.user.pk].sandboxes_live) == (0, 0)
    html = response.content.decode()
    assert "9.50" in html
    assert reverse("dashboard:student", args=[student["user"].hub_username]) in html

    def emails(**params) -> list[str]:
        page = pm_client.get(url, params).context["page"]
        return [s.user.email for s in page.object_list]

    assert emails(q="zara") == ["zara@uni.edu.pk"]
    assert emails(q="Khan") == ["zara@uni.edu.pk"]
    assert emails(university=student["profile"].university.pk) == [student["user"].email]
    assert emails(cohort=student["profile"].cohort.public_id) == [student["user"].email]
    assert emails(status="suspended") == ["zara@uni.edu.pk"]
    assert emails(status="active") == [student["user"].email]


def test_the_student_page_shows_credits_sandboxes_keys_and_events(pm_client, student):
    person = student["user"]
    key, secret = make_key(user=person, name="laptop")
    response = pm_client.get(reverse("dashboard:student", args=[person.hub_username]))
    assert response.status_code == 200
    context = response.context
    assert context["student"].used_this_month == HOUR // 2
    assert [s.pk for s in context["sandboxes"]] == [student["running"].pk]
    assert [k.name for k in context["api_keys"]] == ["laptop"]
    assert len(context["ledger"]) == 2
    html = response.content.decode()
    assert person.email in html
    assert secret not in html
    assert reverse("dashboard:account", args=[student["account"].public_id]) in html


def test_a_person_who_is_not_a_student_has_no_student_page(pm_client, programme_manager):
    founder = MembershipFactory(role=Role.OWNER).user
    for name in (founder.hub_username, "nobody-here"):
        assert pm_client.get(reverse("dashboard:student", args=[name])).status_code == 404


# --- Suspending an organisation -------------------------------------------------------------


def test_suspending_an_organisation_stops_it_keys_sessions_and_is_audited(
    pm_client, programme_manager, startup, hub_tasks, django_capture_on_commit_callbacks
):
    # given the startup's people signed in, a service key that works, a sandbox running
    organisation = startup["organisation"]
    browsers = {who: signed_in(startup[who]) for who in ("owner", "admin", "member")}
    bystander = signed_in(MembershipFactory(role=Role.OWNER).user)
    assert all(is_signed_in(b) for b in browsers.values())
    _key, service_key = make_key(organisation=organisation, acting_user=startup["owner"])
    api = key_client(service_key)
    assert api.get(ME).status_code == 200
    hub_tasks.clear()
    # when a programme manager suspends it with a reason
    with django_capture_on_commit_callbacks(execute=True):
        response = pm_client.post(
            reverse("dashboard:organisation_suspend", args=[organisation.public_id]),
            {"reason": "Credit farming under investigation"},
        )
    # then it is suspended, its live sandbox is stopping in the hub, its key answers 401 and
    # its people are signed out; someone else's session is untouched
    assert response.status_code == 302
    page = pm_client.get(response["Location"])
    assert "The organisation is suspended. 1 sandbox is stopping. 3 sessions ended." in (
        page.content.decode()
    )
    organisation.refresh_from_db()
    assert organisation.is_active is False
    running = Sandbox.objects.get(pk=startup["running"].pk)
    assert running.status == Status.STOPPING
    assert running.status_message == "Suspended by the programme"
    assert hub_tasks == [("sandbox_stop", (running.pk,), {"reason": "Suspended by the programme"})]
    assert api.get(ME).status_code == 401
    assert not any(is_signed_in(b) for b in browsers.values())
    assert is_signed_in(bystander)
    assert is_signed_in(pm_client)
    event = AuditEvent.objects.get(action="organisation.suspended")
    assert event.actor == programme_manager
    assert event.target_id == str(organisation.public_id)
    assert event.data["reason"] == "Credit farming under investigation"
    assert event.data["sandboxes_stopped"] == [str(running.public_id)]
    assert event.data["sessions_ended"] == 3
    assert event.data["api_keys_suspended"] == [_key.key_id]
    # and the page offers the reactivation instead
    html = page.content.decode()
    assert reverse("dashboard:organisation_reactivate", args=[organisation.public_id]) in html
    # and the key was not revoked: nothing was deleted
    assert ApiKey.objects.get(pk=_key.pk).revoked_at is None


def test_reactivating_an_organisation_restores_its_keys_and_sign_in(
    pm_client, programme_manager, startup
):
    organisation = startup["organisation"]
    _key, service_key = make_key(organisation=organisation, acting_user=startup["owner"])
    api = key_client(service_key)
    organisation_suspend(organisation=organisation, reason="check", acting_user=programme_manager)
    assert api.get(ME).status_code == 401

    response = pm_client.post(
        reverse("dashboard:organisation_reactivate", args=[organisation.public_id]),
        {"reason": "Cleared"},
    )

    assert response.status_code == 302
    organisation.refresh_from_db()
    assert organisation.is_active is True
    assert api.get(ME).status_code == 200
    browser = Client()
    assert browser.login(email=startup["member"].email, password=PASSWORD)
    assert is_signed_in(browser)
    event = AuditEvent.objects.get(action="organisation.reactivated")
    assert (event.actor, event.data["reason"]) == (programme_manager, "Cleared")
    assert event.data["api_keys_restored"] == [_key.key_id]
    # the stopped sandbox stays stopped: its owner starts it again
    assert Sandbox.objects.get(pk=startup["running"].pk).status == Status.STOPPING


def test_suspension_is_idempotent(pm_client, programme_manager, startup, hub_tasks):
    organisation = startup["organisation"]
    url = reverse("dashboard:organisation_suspend", args=[organisation.public_id])
    pm_client.post(url, {"reason": "first"})
    hub_tasks.clear()
    response = pm_client.post(url, {"reason": "second"}, follow=True)
    assert response.status_code == 200
    assert "Nothing to do" in response.content.decode()
    assert AuditEvent.objects.filter(action="organisation.suspended").count() == 1
    assert hub_tasks == []
    again = organisation_reactivate(
        organisation=organisation, reason="ok", acting_user=programme_manager
    )
    assert again.changed
    assert not organisation_reactivate(
        organisation=organisation, reason="ok", acting_user=programme_manager
    ).changed
    assert AuditEvent.objects.filter(action="organisation.reactivated").count() == 1


def _nothing_changed(startup, api, browsers) -> None:
    startup["organisation"].refresh_from_db()
    assert startup["organisation"].is_active is True
    assert Sandbox.objects.get(pk=startup["running"].pk).status == Status.RUNNING
    assert api.get(ME).status_code == 200
    assert all(is_signed_in(b) for b in browsers)
    assert not AuditEvent.objects.filter(action__startswith="organisation.suspend").exists()


@pytest.mark.parametrize(
    ("how", "status"),
    [
        ("no reason", 400),
        ("blank reason", 400),
        ("GET", 405),
        ("unknown id", 404),
        ("without the CSRF token", 403),
    ],
)
def test_bad_suspension_requests_change_nothing(programme_manager, startup, hub_tasks, how, status):
    organisation = startup["organisation"]
    _key, service_key = make_key(organisation=organisation, acting_user=startup["owner"])
    api = key_client(service_key)
    browsers = [signed_in(startup["owner"]), signed_in(startup["member"])]
    manager = Client(enforce_csrf_checks=how == "without the CSRF token")
    manager.force_login(programme_manager)
    url = reverse("dashboard:organisation_suspend", args=[organisation.public_id])
    hub_tasks.clear()

    if how == "no reason":
        response = manager.post(url, {})
    elif how == "blank reason":
        response = manager.post(url, {"reason": "   "})
    elif how == "GET":
        response = manager.get(url, {"reason": "by GET"})
    elif how == "unknown id":
        url = reverse("dashboard:organisation_suspend", args=[uuid.uuid4()])
        response = manager.post(url, {"reason": "who?"})
    else:
        response = manager.post(url, {"reason": "forged"})

    assert response.status_code == status
    if status == 400:
        assert response.context["suspension_form"].errors["reason"]
    _nothing_changed(startup, api, browsers)
    assert hub_tasks == []


def test_a_programme_manager_cannot_suspend_their_own_organisation(pm_client, programme_manager):
    organisation = MembershipFactory(user=programme_manager, role=Role.MEMBER).organisation
    response = pm_client.post(
        reverse("dashboard:organisation_suspend", args=[organisation.public_id]),
        {"reason": "mine"},
    )
    assert response.status_code == 403
    assert "another programme manager" in response.content.decode()
    organisation.refresh_from_db()
    assert organisation.is_active
    assert not AuditEvent.objects.filter(action="organisation.suspended").exists()


def test_the_services_refuse_someone_who_is_not_a_programme_manager(startup):
    with pytest.raises(PermissionDenied):
        organisation_suspend(
            organisation=startup["organisation"], reason="x", acting_user=startup["owner"]
        )
    assert Organisation.objects.get(pk=startup["organisation"].pk).is_active


# --- What a suspended organisation can no longer do -----------------------------------------


def test_a_suspended_organisation_cannot_launch_restart_or_receive_credits(
    programme_manager, startup, hub_tasks
):
    organisation = startup["organisation"]
    stopped = Sandbox.objects.get(status=Status.STOPPED, organisation=organisation)
    organisation_suspend(organisation=organisation, reason="x", acting_user=programme_manager)
    hub_tasks.clear()
    before = (Sandbox.objects.count(), LedgerEntry.objects.count(), CreditGrant.objects.count())

    with pytest.raises(PermissionDenied, match="suspended"):
        committed(
            launcher.sandbox_launch,
            user=startup["member"],
            image=image(),
            profile=profile("cpu-small"),
        )
    with pytest.raises(PermissionDenied, match="suspended"):
        committed(launcher.sandbox_restart, sandbox=stopped, acting_user=startup["member"])
    with pytest.raises(ApplicationError, match="suspended"):
        adjustment_post(
            account=startup["account"],
            credit_seconds=HOUR,
            reason="goodwill",
            idempotency_key="adjustment:suspended",
            acting_user=programme_manager,
        )

    after = (Sandbox.objects.count(), LedgerEntry.objects.count(), CreditGrant.objects.count())
    assert after == before
    assert Sandbox.objects.get(pk=stopped.pk).status == Status.STOPPED
    assert hub_tasks == []


def test_a_launch_that_read_the_organisation_before_its_suspension_is_refused(
    monkeypatch, programme_manager, startup, hub_tasks
):
    # given a launch that found the organisation active (before its transaction)...
    holder = launcher.holder_for(user=startup["member"])
    monkeypatch.setattr(launcher, "holder_for", lambda **kwargs: holder)
    # ...and a suspension that commits before the launch takes its lock
    organisation_suspend(
        organisation=startup["organisation"], reason="x", acting_user=programme_manager
    )
    hub_tasks.clear()
    # then the launch reads the flag again under the lock, and is refused
    with pytest.raises(PermissionDenied, match="suspended"):
        committed(
            launcher.sandbox_launch,
            user=startup["member"],
            image=image(),
            profile=profile("cpu-small"),
        )
    assert not Sandbox.objects.filter(user=startup["member"]).live().exists()
    assert hub_tasks == []


def _race_once(manager) -> list[str]:
    """Three members launch while a programme manager suspends their organisation, all at once;
    returns the statuses of its sandboxes that are neither stopping nor stopped."""
    founders = [MembershipFactory(role=Role.OWNER)]
    organisation = founders[0].organisation
    founders += [MembershipFactory(organisation=organisation) for _ in range(2)]
    lot(account_for_organisation(organisation), 100 * HOUR)
    start = threading.Barrier(len(founders) + 1)
    errors = []

    def launch(person):
        try:
            start.wait()
            launcher.sandbox_launch(user=person, image=image(), profile=profile("cpu-small"))
        except PermissionDenied:
            pass  # refused: the suspension came first
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def suspend():
        try:
            start.wait()
            organisation_suspend(organisation=organisation, reason="race", acting_user=manager)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch, args=(m.user,)) for m in founders]
    threads.append(threading.Thread(target=suspend))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert not Organisation.objects.get(pk=organisation.pk).is_active
    left = Sandbox.objects.filter(organisation=organisation).exclude(
        status__in=[Status.STOPPING, Status.STOPPED]
    )
    return list(left.values_list("status", flat=True))


@pytest.mark.django_db(transaction=True)
def test_launches_racing_a_suspension_end_stopped_or_refused(hub_tasks):
    """Real threads on real PostgreSQL transactions: whoever wins, no sandbox of a suspended
    organisation is left running (the suspension locks its members' rows, a launch holds its
    person's row and reads the flag again under it)."""
    catalogue()
    manager = UserFactory()
    programme_manager_grant(user=manager, acting_user=None)
    for _round in range(4):
        assert _race_once(manager) == []


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
    assert hub_tasks == [("sandbox_stop", (running.pk,), {"reason": "Suspended by the programme"})]
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
    student_suspend(student=person, reason="x", acting_user=programme_manager)
    account = account_for_student(person)
    assert not CreditGrant.objects.filter(account=account).exists()

    with django_capture_on_commit_callbacks(execute=True):
        student_reactivate(student=person, reason="ok", acting_user=programme_manager)

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
        student_suspend(student=person, reason="x", acting_user=person)

    person.refresh_from_db()
    other_manager.refresh_from_db()
    assert person.is_active
    assert other_manager.is_active
    assert Sandbox.objects.get(pk=student["running"].pk).status == Status.RUNNING
    assert not AuditEvent.objects.filter(action="student.suspended").exists()


def test_a_suspended_student_cannot_launch_or_receive_credits(programme_manager, student):
    person = student["user"]
    launcher.sandbox_stop(sandbox=student["running"], acting_user=person)
    student_suspend(student=person, reason="x", acting_user=programme_manager)
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


# --- Who may see and do this ----------------------------------------------------------------


@pytest.fixture
def people(programme_manager_without_mfa):
    return {
        "student": StudentProfileFactory().user,
        "startup member": MembershipFactory(role=Role.MEMBER).user,
        "organisation admin": MembershipFactory(role=Role.ADMIN).user,
        "organisation owner": MembershipFactory(role=Role.OWNER).user,
        "programme manager without MFA": programme_manager_without_mfa,
    }


@pytest.fixture
def targets():
    organisation = MembershipFactory(role=Role.OWNER).organisation
    learner = StudentProfileFactory().user
    return {
        "dashboard:organisations": [],
        "dashboard:organisation": [organisation.public_id],
        "dashboard:students": [],
        "dashboard:student": [learner.hub_username],
        "dashboard:organisation_suspend": [organisation.public_id],
        "dashboard:organisation_reactivate": [organisation.public_id],
        "dashboard:student_suspend": [learner.hub_username],
        "dashboard:student_reactivate": [learner.hub_username],
    }


PAGES = [
    "dashboard:organisations",
    "dashboard:organisation",
    "dashboard:students",
    "dashboard:student",
]
ACTIONS = [
    "dashboard:organisation_suspend",
    "dashboard:organisation_reactivate",
    "dashboard:student_suspend",
    "dashboard:student_reactivate",
]
ROLES = [
    "anonymous",
    "student",
    "startup member",
    "organisation admin",
    "organisation owner",
    "programme manager without MFA",
]


def _expected_denial(response, role: str) -> None:
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    elif role == "programme manager without MFA":
        assert response.status_code == 302
        assert response["Location"] == reverse("mfa_activate_totp")
    else:
        assert response.status_code == 403


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_only_programme_managers_with_mfa_see_the_directory(client, people, targets, page, role):
    if role != "anonymous":
        client.force_login(people[role])
    _expected_denial(client.get(reverse(page, args=targets[page])), role)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", ROLES)
def test_only_programme_managers_with_mfa_suspend_or_reactivate(
    client, people, targets, action, role
):
    # given everything active, and one suspended organisation and student for the reactivations
    if action.endswith("reactivate"):
        Organisation.objects.update(is_active=False)
        User.objects.filter(student_profile__isnull=False).exclude(pk=people["student"].pk).update(
            is_active=False
        )
    before = (
        sorted(Organisation.objects.values_list("pk", "is_active")),
        sorted(User.objects.values_list("pk", "is_active")),
    )
    if role != "anonymous":
        client.force_login(people[role])
    _expected_denial(client.post(reverse(action, args=targets[action]), {"reason": "x"}), role)
    after = (
        sorted(Organisation.objects.values_list("pk", "is_active")),
        sorted(User.objects.values_list("pk", "is_active")),
    )
    assert after == before
    assert not AuditEvent.objects.filter(
        action__in=[
            "organisation.suspended",
            "organisation.reactivated",
            "student.suspended",
            "student.reactivated",
        ]
    ).exists()


def test_the_programme_nav_links_to_the_directory(pm_client):
    html = pm_client.get(reverse("dashboard:overview")).content.decode()
    assert f'href="{reverse("dashboard:organisations")}"' in html
    assert f'href="{reverse("dashboard:students")}"' in html


# --- The live streams notice ----------------------------------------------------------------


@pytest.fixture
def own_channel_prefix(settings):
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS))
    layers["default"]["CONFIG"]["prefix"] = f"directory-test-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = layers


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_suspension_closes_the_members_open_live_streams(
    monkeypatch, own_channel_prefix, settings
):
    from sandboxes.live import broadcast

    monkeypatch.setattr(LiveConsumer, "ACCESS_RECHECK_SECONDS", 0)
    membership = await sync_to_async(MembershipFactory)(role=Role.OWNER)
    organisation = membership.organisation
    manager = await sync_to_async(UserFactory)()
    await sync_to_async(programme_manager_grant)(user=manager, acting_user=None)
    await sync_to_async(totp_activate)(manager)
    browser = await sync_to_async(signed_in)(membership.user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    cookie = cookie.encode()
    own = live_socket(cookie=cookie)
    shared = live_socket(f"/ws/live/organisation/{organisation.public_id}/", cookie=cookie)
    assert (await own.open())[0]
    assert (await shared.open())[0]

    await sync_to_async(organisation_suspend)(
        organisation=organisation, reason="live", acting_user=manager
    )
    await sync_to_async(broadcast.send_after_commit)(
        [
            (user_group(membership.user.pk), {"type": "credits.balance"}),
            (organisation_group(organisation.pk), {"type": "credits.balance"}),
        ]
    )

    assert await own.receive_close() == 4401  # the session is gone
    assert await shared.receive_close() in (4401, 4403)  # signed out, and the stream is closed


def test_session_key_is_gone_from_the_database(programme_manager, startup):
    """The sessions are deleted, not only made useless."""
    from django.contrib.sessions.models import Session

    browser = signed_in(startup["member"])
    key = browser.session.session_key
    assert Session.objects.filter(session_key=key).exists()
    organisation_suspend(
        organisation=startup["organisation"], reason="x", acting_user=programme_manager
    )
    assert not Session.objects.filter(session_key=key).exists()
