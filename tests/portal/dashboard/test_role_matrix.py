"""The role matrix over every programme URL: each page, each export and each action, for every
kind of person. Only a programme manager whose session passed MFA gets in; everyone else is
turned away before anything is read or written, and a refused request changes nothing. A
programme manager who has TOTP but whose session did not use it is turned away too.

Programme-manager authority outside /programme/ is in the matrix as well: the API with a
session (approving an application, reading another organisation's statement), statements of
other holders (HTML and CSV) and programme-scoped keys on the key page.

The URLs are read from the `dashboard` namespace itself, so a page added without a row here
fails `test_every_programme_url_is_in_the_matrix`.

The gate runs before any object is looked up, so a person without the role gets 403 whether the
object exists or not (existence is not revealed); only the programme manager sees a 404.
"""

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Group
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from inference.catalogue.models import ServedModel
from inference.deployments.models import Deployment
from portal.apikeys.models import ApiKey
from portal.audit.models import AuditEvent
from portal.credits.models import (
    ApplicationState,
    CreditAccount,
    CreditApplication,
    CreditGrant,
    LedgerEntry,
    LedgerTransaction,
)
from portal.credits.services import account_for_organisation, account_for_student
from portal.dashboard.views.reports import XLSX_TYPE
from portal.dashboard.views.review import REVIEW_ACTIONS
from portal.onboarding.models import Cohort
from portal.organisations.models import Organisation, Role
from portal.users.models import User
from portal.users.selectors import PROGRAMME_MFA_REQUIRED
from tests.conftest import sign_in_with_password_only, totp_activate, totp_code_now
from tests.factories import (
    PASSWORD,
    CohortFactory,
    MembershipFactory,
    OrganisationFactory,
    StudentProfileFactory,
)
from tests.portal.credits.helpers import lot

pytestmark = pytest.mark.django_db
HOUR = 3600

ANONYMOUS = "anonymous"
WITHOUT_ROLE = ["student", "startup member", "organisation admin", "organisation owner"]
PM_WITHOUT_MFA = "programme manager without MFA"
PM_PASSWORD_ONLY = "programme manager with MFA, session signed in without it"
PM = "programme manager with MFA"
ROLES = [ANONYMOUS, *WITHOUT_ROLE, PM_WITHOUT_MFA, PM_PASSWORD_ONLY, PM]


@dataclass
class World:
    """One of everything a programme URL names, and the people who try them.

    The organisation's people belong to the organisation whose application, account and grant
    are on the table, and the student is in the cohort: the closest anyone comes to having a
    claim on the data, and still not enough.
    """

    organisation: Organisation
    account: CreditAccount
    grant: CreditGrant
    application: CreditApplication
    cohort: Cohort
    student: User
    people: dict[str, User | None]
    model: ServedModel  # in the catalogue, not deployed
    deployment: Deployment  # of another model, serving on CPU


MODEL_WEIGHTS = "matrix/model.gguf"


def _model(name: str) -> ServedModel:
    return ServedModel.objects.create(
        name=name,
        display_name=name,
        task=ServedModel.Task.CHAT,
        engine=ServedModel.Engine.LLAMA_CPP,
        weights_path=MODEL_WEIGHTS,
        licence="Apache-2.0",
        context_length=2048,
        input_price="0.100",
        output_price="0.200",
    )


@pytest.fixture
def world(programme_manager_without_mfa, settings, tmp_path) -> World:
    owner = MembershipFactory(role=Role.OWNER)
    organisation = owner.organisation
    admin = MembershipFactory(organisation=organisation, role=Role.ADMIN).user
    member = MembershipFactory(organisation=organisation, role=Role.MEMBER).user
    account = account_for_organisation(organisation)
    grant = lot(account, 100 * HOUR)
    application = CreditApplication.objects.create(
        organisation=organisation,
        created_by=owner.user,
        title="Urdu OCR",
        summary="Train an OCR model on scanned newspapers.",
        sector="language",
        requested_gpu_hours=100,
        duration_months=3,
        data_sensitivity="public",
        state=ApplicationState.SUBMITTED,
        submitted_at=timezone.now() - dt.timedelta(days=2),
    )
    cohort = CohortFactory()
    student = StudentProfileFactory(cohort=cohort).user
    lot(account_for_student(student), 10 * HOUR)
    another_student = StudentProfileFactory(cohort=cohort).user
    # The model pages: a model store with one weights file, and the engine images deployments use
    settings.MODEL_STORE_DIR = tmp_path / "models"
    (tmp_path / "models" / "matrix").mkdir(parents=True)
    (tmp_path / "models" / MODEL_WEIGHTS).write_bytes(b"GGUF")
    settings.LLM_ENGINE_IMAGES = {"llama.cpp": "nac/llm-llamacpp:test", "vllm": "nac/llm-vllm:t"}
    deployed = _model("matrix-deployed")
    return World(
        organisation=organisation,
        account=account,
        grant=grant,
        application=application,
        cohort=cohort,
        student=student,
        people={
            ANONYMOUS: None,
            "student": another_student,
            "startup member": member,
            "organisation admin": admin,
            "organisation owner": owner.user,
            PM_WITHOUT_MFA: programme_manager_without_mfa,
        },
        model=_model("matrix-offered"),
        deployment=Deployment.objects.create(model=deployed, gpus_per_replica=0, replicas_wanted=1),
    )


@pytest.fixture
def people(world, request) -> dict[str, User | None]:
    """The world's people, with the programme manager who has MFA added only when asked for
    (the `programme_manager` fixture gives the one without MFA an authenticator)."""
    people = dict(world.people)
    callspec = getattr(request.node, "callspec", None)
    role = callspec.params.get("role") if callspec is not None else None
    if role in (PM, PM_PASSWORD_ONLY):
        people[role] = request.getfixturevalue("programme_manager")
        del people[PM_WITHOUT_MFA]
    return people


def sign_in(client, role: str, person: User | None) -> None:
    """As `role` would be signed in: a programme manager with MFA has passed it in this session
    (force_login records it), except the one who signed in with the password alone."""
    if person is None:
        return
    if role == PM_PASSWORD_ONLY:
        sign_in_with_password_only(client, person)
    else:
        client.force_login(person)


def code_entry_url(next_url: str) -> str:
    """Where a session without the second factor is sent: enter a code, then come back."""
    return f"{reverse('mfa_reauthenticate')}?{urlencode({'next': next_url})}"


def state() -> dict:
    """Everything a refused request must leave as it was."""
    return {
        "audit": list(AuditEvent.objects.order_by("pk").values_list("pk", "action")),
        "transactions": LedgerTransaction.objects.count(),
        "entries": LedgerEntry.objects.count(),
        "accounts": sorted(CreditAccount.objects.values_list("pk", "balance")),
        "grants": sorted(
            CreditGrant.objects.values_list("pk", "remaining", "revoked_at", "expires_at")
        ),
        "applications": sorted(
            CreditApplication.objects.values_list("pk", "state", "decided_at", "updated_at")
        ),
        "cohorts": sorted(
            Cohort.objects.values_list("pk", "name", "capacity", "expires_at", "updated_at")
        ),
        "organisations": sorted(Organisation.objects.values_list("pk", "is_active", "updated_at")),
        "people": sorted(User.objects.values_list("pk", "is_active", "is_staff")),
        "models": sorted(
            ServedModel.objects.values_list("pk", "input_price", "visibility", "is_active")
        ),
        "deployments": sorted(
            Deployment.objects.values_list("pk", "state", "replicas_wanted", "updated_at")
        ),
    }


# --- The matrix's rows: every URL of the namespace, each method it answers ------------------


@dataclass
class Case:
    """One request to a programme URL: the URL's name, how to fill its arguments from the world,
    the method and the (valid) data, a set-up that puts the world in the state the action needs,
    and what the programme manager with MFA must find afterwards."""

    name: str
    method: str = "get"
    variant: str = ""
    kwargs: Callable[[World], dict] = lambda w: {}
    data: Callable[[World], dict] = lambda w: {}
    prepare: Callable[[World], None] = lambda w: None
    done: Callable[[World, object], None] = lambda w, response: None
    status: int = 200
    post_only: bool = False

    @property
    def id(self) -> str:
        return ":".join(part for part in (self.name, self.method, self.variant) if part)

    def url(self, world: World) -> str:
        return reverse(f"dashboard:{self.name}", kwargs=self.kwargs(world))


def _future(days: int) -> str:
    return (timezone.localtime() + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")


def _org(w: World) -> dict:
    return {"public_id": w.organisation.public_id}


def _student(w: World) -> dict:
    return {"hub_username": w.student.hub_username}


def _application(w: World) -> dict:
    return {"public_id": w.application.public_id}


def _model_id(w: World) -> dict:
    return {"public_id": w.model.public_id}


def _deployment_id(w: World) -> dict:
    return {"public_id": w.deployment.public_id}


def _model_usage_csv(w, response):
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert _streamed(response).startswith(b"dimension,key,name,requests,")


def _review(action: str) -> Callable[[World], dict]:
    return lambda w: {"public_id": w.application.public_id, "action": action}


def _reload(instance):
    instance.refresh_from_db()
    return instance


def _streamed(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _audit_exported(w, response):
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert _streamed(response).startswith(b"created_at,actor_email,action")
    assert AuditEvent.objects.filter(action="audit.exported").exists()


def _report_csv(w, response):
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert _streamed(response).startswith(b"dimension,key,name,")


def _report_xlsx(w, response):
    assert response["Content-Type"] == XLSX_TYPE
    assert _streamed(response)[:2] == b"PK"  # a zip: the workbook


def _state_is(expected: str):
    def check(w, response):
        assert _reload(w.application).state == expected

    return check


def _approved(w, response):
    application = _reload(w.application)
    assert application.state == ApplicationState.PARTIALLY_APPROVED
    grant = CreditGrant.objects.get(application=application)
    assert grant.amount == 60 * HOUR


def _commented(w, response):
    assert w.application.events.filter(message="Which data set?").exists()


def _suspend_organisation(w):
    Organisation.objects.filter(pk=w.organisation.pk).update(is_active=False)


def _suspend_student(w):
    User.objects.filter(pk=w.student.pk).update(is_active=False)


CASES = [
    Case("overview"),
    Case("audit"),
    Case("audit_export", done=_audit_exported),
    Case("cohorts"),
    Case(
        "cohorts",
        "post",
        data=lambda w: {"name": "Matrix cohort", "capacity": 40, "expires_at": _future(30)},
        done=lambda w, r: Cohort.objects.get(name="Matrix cohort"),
        status=302,
    ),
    Case("cohort", kwargs=lambda w: {"public_id": w.cohort.public_id}),
    Case(
        "cohort",
        "post",
        kwargs=lambda w: {"public_id": w.cohort.public_id},
        data=lambda w: {"name": w.cohort.name, "capacity": 99, "expires_at": _future(60)},
        done=lambda w, r: _reload(w.cohort).capacity == 99 or pytest.fail("not saved"),
        status=302,
    ),
    Case(
        "cohort_deactivate",
        "post",
        kwargs=lambda w: {"public_id": w.cohort.public_id},
        done=lambda w, r: _reload(w.cohort).is_expired or pytest.fail("still open"),
        status=302,
        post_only=True,
    ),
    Case("cluster"),
    Case("applications"),
    Case("application_review", kwargs=_application),
    Case(
        "application_review_action",
        "post",
        "review",
        kwargs=_review("review"),
        done=_state_is(ApplicationState.IN_REVIEW),
        status=302,
        post_only=True,
    ),
    Case(
        "application_review_action",
        "post",
        "approve",
        kwargs=_review("approve"),
        data=lambda w: {
            "gpu_hours": 60,
            "expires_on": (timezone.localdate() + dt.timedelta(days=90)).isoformat(),
            "rate_pkr_per_gpu_hour": "600",
        },
        done=_approved,
        status=302,
        post_only=True,
    ),
    Case(
        "application_review_action",
        "post",
        "changes",
        kwargs=_review("changes"),
        data=lambda w: {"message": "Say more about the data."},
        done=_state_is(ApplicationState.CHANGES_REQUESTED),
        status=302,
        post_only=True,
    ),
    Case(
        "application_review_action",
        "post",
        "reject",
        kwargs=_review("reject"),
        data=lambda w: {"reason": "Out of scope."},
        done=_state_is(ApplicationState.REJECTED),
        status=302,
        post_only=True,
    ),
    Case(
        "application_review_action",
        "post",
        "comment",
        kwargs=_review("comment"),
        data=lambda w: {"message": "Which data set?"},
        done=_commented,
        status=302,
        post_only=True,
    ),
    Case(
        "grant_revoke",
        "post",
        kwargs=lambda w: {"public_id": w.grant.public_id},
        data=lambda w: {"reason": "Company dissolved"},
        done=lambda w, r: _reload(w.grant).revoked_at or pytest.fail("not revoked"),
        status=302,
        post_only=True,
    ),
    Case("account", kwargs=lambda w: {"public_id": w.account.public_id}),
    Case(
        "account_adjust",
        "post",
        kwargs=lambda w: {"public_id": w.account.public_id},
        data=lambda w: {"gpu_hours": "2", "reason": "Outage", "token": str(uuid.uuid4())},
        done=lambda w, r: _reload(w.account).balance == 102 * HOUR or pytest.fail("no change"),
        status=302,
        post_only=True,
    ),
    Case("organisations"),
    Case("organisation", kwargs=_org),
    Case(
        "organisation_suspend",
        "post",
        kwargs=_org,
        data=lambda w: {"reason": "Credit farming"},
        done=lambda w, r: not _reload(w.organisation).is_active or pytest.fail("active"),
        status=302,
        post_only=True,
    ),
    Case(
        "organisation_reactivate",
        "post",
        kwargs=_org,
        data=lambda w: {"reason": "Cleared"},
        prepare=_suspend_organisation,
        done=lambda w, r: _reload(w.organisation).is_active or pytest.fail("suspended"),
        status=302,
        post_only=True,
    ),
    Case("students"),
    Case("student", kwargs=_student),
    Case(
        "student_suspend",
        "post",
        kwargs=_student,
        data=lambda w: {"reason": "Shared their account"},
        done=lambda w, r: not _reload(w.student).is_active or pytest.fail("active"),
        status=302,
        post_only=True,
    ),
    Case(
        "student_reactivate",
        "post",
        kwargs=_student,
        data=lambda w: {"reason": "Cleared"},
        prepare=_suspend_student,
        done=lambda w, r: _reload(w.student).is_active or pytest.fail("suspended"),
        status=302,
        post_only=True,
    ),
    Case("reports"),
    Case("reports_export", variant="csv", kwargs=lambda w: {"extension": "csv"}, done=_report_csv),
    Case(
        "reports_export", variant="xlsx", kwargs=lambda w: {"extension": "xlsx"}, done=_report_xlsx
    ),
    Case(
        "report_monthly",
        kwargs=lambda w: {"month": f"{timezone.localdate():%Y-%m}"},
    ),
    # The model API's pages
    Case("models"),
    Case("model_create"),
    Case(
        "model_create",
        "post",
        data=lambda w: {
            "name": "matrix-new",
            "display_name": "Matrix",
            "task": "chat",
            "engine": "llama.cpp",
            "weights_path": MODEL_WEIGHTS,
            "licence": "MIT",
            "context_length": 2048,
            "languages": "en",
            "input_price": "0.5",
            "output_price": "0.5",
            "visibility": "all",
        },
        done=lambda w, r: ServedModel.objects.get(name="matrix-new"),
        status=302,
    ),
    Case("model", kwargs=_model_id),
    Case(
        "model",
        "post",
        kwargs=_model_id,
        data=lambda w: {
            "display_name": "Matrix",
            "weights_path": MODEL_WEIGHTS,
            "licence": "MIT",
            "context_length": 2048,
            "languages": "en, ur",
            "input_price": "0.9",
            "output_price": "0.2",
            "visibility": "organisation",
            "organisation": str(w.organisation.public_id),
        },
        done=lambda w, r: _reload(w.model).organisation == w.organisation or pytest.fail("no"),
        status=302,
    ),
    Case(
        "model_withdraw",
        "post",
        kwargs=_model_id,
        done=lambda w, r: not _reload(w.model).is_active or pytest.fail("still offered"),
        status=302,
        post_only=True,
    ),
    Case(
        "model_deploy",
        "post",
        kwargs=_model_id,
        data=lambda w: {"gpus_per_replica": 0, "replicas": 1},
        done=lambda w, r: Deployment.objects.get(model=w.model, state="active"),
        status=302,
        post_only=True,
    ),
    Case("model_deployments"),
    Case(
        "deployment_scale",
        "post",
        kwargs=_deployment_id,
        data=lambda w: {"replicas": 2},
        done=lambda w, r: _reload(w.deployment).replicas_wanted == 2 or pytest.fail("not scaled"),
        status=302,
        post_only=True,
    ),
    Case(
        "deployment_stop",
        "post",
        kwargs=_deployment_id,
        done=lambda w, r: _reload(w.deployment).state == "stopped" or pytest.fail("serving"),
        status=302,
        post_only=True,
    ),
    Case("model_usage"),
    Case("model_usage_export", done=_model_usage_csv),
]
CASE_IDS = [case.id for case in CASES]


def _names(patterns, namespace: str) -> set[str]:
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}:{pattern.namespace}" if pattern.namespace else namespace
            names |= _names(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            names.add(f"{namespace}:{pattern.name or pattern.pattern}")
    return names


def dashboard_url_names() -> set[str]:
    """Every URL of the `dashboard` namespace, as the project's URL configuration has it."""
    _prefix, resolver = get_resolver().namespace_dict["dashboard"]
    return _names(resolver.url_patterns, "dashboard")


def test_every_programme_url_is_in_the_matrix():
    names = dashboard_url_names()
    assert len(names) > 20  # the namespace was found, not an empty shell
    assert names == {f"dashboard:{case.name}" for case in CASES}


def test_every_review_action_is_in_the_matrix():
    tried = {case.variant for case in CASES if case.name == "application_review_action"}
    assert tried == set(REVIEW_ACTIONS)


def test_both_export_formats_are_in_the_matrix():
    pattern = next(
        p
        for p in get_resolver().namespace_dict["dashboard"][1].url_patterns
        if getattr(p, "name", None) == "reports_export"
    )
    tried = {case.variant for case in CASES if case.name == "reports_export"}
    assert f"(?P<extension>{'|'.join(sorted(tried))})" in pattern.pattern.regex.pattern


# --- The matrix -----------------------------------------------------------------------------


def _request(client, case: Case, world: World, method: str | None = None):
    return getattr(client, method or case.method)(case.url(world), case.data(world))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(client, world, people, role, case):
    # given the world in the state the action needs, and the person signed in (or not)
    case.prepare(world)
    person = people[role]
    sign_in(client, role, person)
    before = state()
    pm_events = AuditEvent.objects.filter(actor=person).count() if role == PM else 0

    # when they make the request
    response = _request(client, case, world)
    body = _streamed(response) if role != PM else b""

    # then only the programme manager with MFA gets in, and only their request has an effect
    if role == ANONYMOUS:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login") + "?next=")
    elif role in WITHOUT_ROLE:
        assert response.status_code == 403, body[:300]
    elif role == PM_WITHOUT_MFA:
        assert response.status_code == 302
        assert response["Location"] == reverse("mfa_activate_totp")
    elif role == PM_PASSWORD_ONLY:
        assert response.status_code == 302
        assert response["Location"] == code_entry_url(case.url(world))
    else:
        assert response.status_code == case.status, response.content[:500]
        if response.status_code == 302:
            assert not response["Location"].startswith(reverse("account_login"))
        case.done(world, response)
    if role != PM:
        assert state() == before
        return
    if case.method == "post" or case.name == "audit_export":
        assert state() != before
        assert AuditEvent.objects.filter(actor=person).count() > pm_events  # audited


# Actions answer only POST: a link (or a crawler, or a forged <img>) cannot suspend anyone.
POST_ONLY = [case for case in CASES if case.post_only]


@pytest.mark.parametrize("case", POST_ONLY, ids=[case.id for case in POST_ONLY])
def test_an_action_fetched_with_get_does_nothing(client, world, programme_manager, case):
    case.prepare(world)
    client.force_login(programme_manager)
    before = state()
    response = _request(client, case, world, method="get")
    assert response.status_code == 405
    assert state() == before


# --- Existence is not revealed to people without the role -----------------------------------


def _names_an_object(name: str) -> bool:
    _prefix, resolver = get_resolver().namespace_dict["dashboard"]
    route = next(str(p.pattern) for p in resolver.url_patterns if p.name == name)
    return "<uuid:public_id>" in route or "<str:hub_username>" in route


WITH_AN_OBJECT = [case for case in CASES if _names_an_object(case.name)]


def _missing(case: Case, world: World) -> str:
    kwargs = case.kwargs(world)
    if "public_id" in kwargs:
        kwargs["public_id"] = uuid.uuid4()
    else:
        kwargs["hub_username"] = "nobody-here"
    return reverse(f"dashboard:{case.name}", kwargs=kwargs)


@pytest.mark.parametrize("case", WITH_AN_OBJECT, ids=[case.id for case in WITH_AN_OBJECT])
def test_a_missing_object_is_403_for_others_and_404_only_for_the_manager(
    client, world, programme_manager, case
):
    url = _missing(case, world)
    client.force_login(world.people["organisation owner"])
    assert getattr(client, case.method)(url, case.data(world)).status_code == 403
    client.force_login(programme_manager)
    assert getattr(client, case.method)(url, case.data(world)).status_code == 404


# --- The Django admin asks for the same --------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_the_admin_requires_a_programme_manager_with_mfa(client, people, role):
    person = people[role]
    sign_in(client, role, person)
    response = client.get(reverse("admin:index"), follow=True)
    chain = [url for url, _status in response.redirect_chain]
    if role == ANONYMOUS:
        # allauth's sign-in (rate-limited, then the second factor), never Django's admin login
        assert chain[-1].startswith(reverse("account_login"))
        assert response.status_code == 200
    elif role in WITHOUT_ROLE:
        assert response.status_code == 403
    elif role == PM_WITHOUT_MFA:
        assert reverse("mfa_activate_totp") in chain
    elif role == PM_PASSWORD_ONLY:
        assert chain[-1] == code_entry_url(reverse("admin:index"))
    else:
        assert chain == []
        assert response.status_code == 200


def test_a_superuser_without_mfa_does_not_see_the_ledger_in_the_admin(
    client, programme_manager_without_mfa
):
    programme_manager_without_mfa.is_superuser = True
    programme_manager_without_mfa.save(update_fields=["is_superuser"])
    client.force_login(programme_manager_without_mfa)
    page = reverse("admin:credits_ledgerentry_changelist")
    response = client.get(page, follow=True)
    assert reverse("mfa_activate_totp") in [url for url, _status in response.redirect_chain]
    # TOTP set up elsewhere (this session did not use it): a code is asked for first
    totp_activate(programme_manager_without_mfa)
    response = client.get(page, follow=True)
    assert response.redirect_chain[-1][0] == code_entry_url(page)
    response = client.post(code_entry_url(page), {"code": totp_code_now()})
    assert response.status_code == 302
    assert client.get(page).status_code == 200


@pytest.mark.parametrize("role", [role for role in ROLES if role != PM])
def test_a_refused_admin_post_changes_nothing(client, world, people, role):
    person = people[role]
    sign_in(client, role, person)
    before = state()
    client.post(reverse("admin:auth_group_add"), {"name": "sneaky"}, follow=True)
    assert not Group.objects.filter(name="sneaky").exists()
    assert state() == before


# --- Programme-manager authority outside /programme/ -----------------------------------------
#
# The same people, with the same sessions, where a programme manager's authority reaches beyond
# the programme pages: the API with a browser session, statements of other holders, and keys
# with programme scopes. Only a session that passed MFA carries the authority.

REFUSED_WITH_THE_MFA_MESSAGE = (PM_WITHOUT_MFA, PM_PASSWORD_ONLY)


def _api_error(response) -> dict:
    return response.json()["error"]


@pytest.mark.parametrize("role", ROLES)
def test_approving_through_the_api_with_a_session(client, world, people, role):
    # given a submitted application and the person signed in to the portal in a browser
    person = people[role]
    sign_in(client, role, person)
    before = state()
    url = f"/api/v1/credit-applications/{world.application.public_id}/approve"
    body = {
        "gpu_hours": 60,
        "expires_on": (timezone.localdate() + dt.timedelta(days=90)).isoformat(),
        "rate_pkr_per_gpu_hour": "600.00",
    }

    # when they approve it through the API with that session (no key)
    response = client.post(url, body, content_type="application/json")

    # then only a programme manager whose session passed MFA decides; the others change nothing
    if role == ANONYMOUS:
        assert response.status_code == 401
    elif role in WITHOUT_ROLE:
        assert response.status_code == 403
        assert _api_error(response)["message"] == "Missing scope: programme:write."
    elif role in REFUSED_WITH_THE_MFA_MESSAGE:
        assert response.status_code == 403
        assert _api_error(response)["message"] == str(PROGRAMME_MFA_REQUIRED)
    else:
        assert response.status_code == 200, response.content[:500]
        _approved(world, response)
        assert AuditEvent.objects.filter(actor=person, action="application.approved").exists()
        return
    assert state() == before


@pytest.fixture
def other_account(world) -> CreditAccount:
    """An organisation nobody in the world belongs to, with something on its statement."""
    account = account_for_organisation(OrganisationFactory())
    lot(account, 7 * HOUR)
    return account


STATEMENT_FORMATS = ["html", "csv"]


@pytest.mark.parametrize("fmt", STATEMENT_FORMATS)
@pytest.mark.parametrize("role", ROLES)
def test_reading_another_organisations_statement(client, world, people, other_account, role, fmt):
    # given a statement of an organisation the person does not belong to
    person = people[role]
    sign_in(client, role, person)
    before = state()
    month = f"{timezone.localdate():%Y-%m}"
    name = "credits:statement_csv" if fmt == "csv" else "credits:statement"
    url = reverse(name, kwargs={"public_id": other_account.public_id, "month": month})

    # when they ask for it
    response = client.get(url)

    # then only a programme manager whose session passed MFA reads it
    if role == ANONYMOUS:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    elif role in WITHOUT_ROLE:
        assert response.status_code == 404
    elif role in REFUSED_WITH_THE_MFA_MESSAGE:
        assert response.status_code == 403
    else:
        assert response.status_code == 200
        if fmt == "csv":
            assert response.content.startswith(b"section,date,kind")
        assert b"7.00" in response.content  # the lot of 7 GPU-hours is on it
    assert state() == before


@pytest.mark.parametrize("role", ROLES)
def test_reading_another_organisations_statement_through_the_api(
    client, world, people, other_account, role
):
    # given the same statement, asked for through the API with a browser session
    person = people[role]
    sign_in(client, role, person)
    month = f"{timezone.localdate():%Y-%m}"
    url = f"/api/v1/credits/statements/{month}?organisation={other_account.organisation.public_id}"

    # when they ask for it
    response = client.get(url)

    # then nobody reads it there: the API shows the caller's own organisations only
    assert response.status_code == (401 if role == ANONYMOUS else 404)
    assert b"closing_credit_seconds" not in response.content


@pytest.mark.parametrize("role", ROLES)
def test_making_a_programme_key(client, world, people, role):
    # given the person on the key page
    person = people[role]
    sign_in(client, role, person)
    before = state()
    keys = ApiKey.objects.count()
    body = {
        "name": "review bot",
        "owner": "personal",
        "scopes": ["programme:write", "applications:read"],
        "expires_in_days": 30,
    }

    # when they ask for a key with a programme scope
    response = client.post(reverse("apikeys:list"), body)

    # then only a programme manager whose session passed MFA, and who has just proven who they
    # are again, gets one
    if role == ANONYMOUS:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))
    elif role in WITHOUT_ROLE:
        assert response.status_code == 400  # the scope is not offered to them
    elif role in REFUSED_WITH_THE_MFA_MESSAGE:
        assert response.status_code == 403
        assert str(PROGRAMME_MFA_REQUIRED) in response.content.decode()
    else:
        # not recently: allauth asks for the password again, then makes the key asked for
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_reauthenticate"))
        assert ApiKey.objects.count() == keys
        response = client.post(response["Location"], {"password": PASSWORD})
        assert response.status_code == 200, response.content[:500]
        key = ApiKey.objects.get(user=person)
        assert sorted(key.scopes) == ["applications:read", "programme:write"]
        assert key.expires_at <= timezone.now() + dt.timedelta(days=30)
        assert key.key_id in response.content.decode()  # shown once, in this response
        return
    assert ApiKey.objects.count() == keys
    assert state() == before
