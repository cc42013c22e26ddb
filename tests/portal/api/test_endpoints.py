"""Each endpoint: what it answers when all is well, and when the input is wrong."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.credits.models import ApplicationState, CreditApplication, CreditGrant
from portal.credits.services import usage_charge
from portal.credits.units import gpu_hours_to_credit_seconds
from portal.organisations.models import Role
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.portal.credits.helpers import lot, org_account

from .conftest import (
    API,
    APPLICATION,
    FUNDS_GPU_HOURS,
    PERSON_SCOPES,
    application_make,
    approval,
    assert_error,
    key_client,
    make_key,
)

pytestmark = pytest.mark.django_db
APPLICATIONS = f"{API}/credit-applications"
APPROVE = approval()


def _this_month() -> str:
    return timezone.localdate().strftime("%Y-%m")


# --- /me ------------------------------------------------------------------------------------


def test_me_for_a_personal_key(organisation, owner, owner_key, owner_api):
    body = owner_api.get(f"{API}/me").json()
    assert body["kind"] == "person"
    assert (body["email"], body["hub_username"]) == (owner.email, owner.hub_username)
    assert body["programme_manager"] is False
    assert body["student"] is False
    assert body["scopes"] == PERSON_SCOPES
    assert body["key"]["id"] == owner_key[0].key_id
    assert [(o["id"], o["role"]) for o in body["organisations"]] == [
        (str(organisation.public_id), Role.OWNER)
    ]


def test_me_for_a_service_key(organisation, owner):
    _, full = make_key(organisation=organisation, acting_user=owner, scopes=["profile:read"])
    body = key_client(full).get(f"{API}/me").json()
    assert body["kind"] == "organisation"
    assert body["email"] is None
    assert body["name"] == organisation.legal_name
    assert body["scopes"] == ["profile:read"]
    assert [o["id"] for o in body["organisations"]] == [str(organisation.public_id)]


# --- Balance --------------------------------------------------------------------------------


def test_balance_of_a_funded_organisation(organisation, funded, owner_api):
    body = owner_api.get(f"{API}/credits/balance").json()
    seconds = gpu_hours_to_credit_seconds(FUNDS_GPU_HOURS)
    assert body["account"] == str(funded.public_id)
    assert body["available_credit_seconds"] == body["balance_credit_seconds"] == seconds
    assert body["available_gpu_hours"] == f"{FUNDS_GPU_HOURS}.00"
    assert [lot["remaining_credit_seconds"] for lot in body["lots"]] == [seconds]
    assert body["lots"][0]["revoked"] is False


def test_balance_of_an_organisation_never_funded_is_empty(organisation, owner_api):
    body = owner_api.get(f"{API}/credits/balance").json()
    assert body["account"] is None
    assert body["available_credit_seconds"] == body["balance_credit_seconds"] == 0
    assert body["lots"] == []


def test_balance_with_several_organisations_needs_one_named(organisation, funded, owner):
    second = OrganisationFactory()
    MembershipFactory(organisation=second, user=owner, role=Role.MEMBER)
    client = key_client(make_key(user=owner)[1])
    error = assert_error(client.get(f"{API}/credits/balance"), 400, "invalid")
    assert "organisation" in error["fields"]
    named = client.get(f"{API}/credits/balance", {"organisation": str(organisation.public_id)})
    assert named.json()["account"] == str(funded.public_id)
    other = client.get(f"{API}/credits/balance", {"organisation": str(second.public_id)})
    assert other.json()["account"] is None
    assert_error(client.get(f"{API}/credits/balance", {"organisation": "not-a-uuid"}), 404)
    assert_error(client.get(f"{API}/credits/balance", {"organisation": str(uuid.uuid4())}), 404)


def test_balance_of_someone_with_no_organisation_and_no_account_is_404(user):
    client = key_client(make_key(user=user)[1])
    assert_error(client.get(f"{API}/credits/balance"), 404, "not_found")


def test_balance_through_a_service_key(organisation, funded, owner):
    client = key_client(make_key(organisation=organisation, acting_user=owner)[1])
    assert client.get(f"{API}/credits/balance").json()["account"] == str(funded.public_id)


# --- Ledger ---------------------------------------------------------------------------------

USAGES = 60


@pytest.fixture
def busy_ledger(organisation, owner):
    """A lot, then USAGES usage debits of 1..USAGES credit-seconds; and the instant between the
    first half of the debits and the second."""
    account = org_account(organisation)
    lot(account, 10**9)
    half = None
    for n in range(1, USAGES + 1):
        if n == USAGES // 2 + 1:
            half = timezone.now()
        usage_charge(
            account=account,
            credit_seconds=n,
            idempotency_key=f"api-test-usage:{n}",
            metadata={"sandbox": f"sb-{n % 3}", "profile": "h100-1g"},
        )
    return account, half


def _follow(client, url, params=None) -> list[dict]:
    results, pages = [], 0
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        results += body["results"]
        pages += 1
        assert pages < 50
        if not body["next"]:
            return results
        assert body["next"].startswith("http")
        response = client.get(body["next"])


def test_ledger_cursor_pages_give_every_entry_once_newest_first(busy_ledger, owner_api):
    first = owner_api.get(f"{API}/credits/ledger").json()
    assert len(first["results"]) == 50
    assert first["next"]
    assert first["previous"] is None
    entries = _follow(owner_api, f"{API}/credits/ledger")
    assert len(entries) == USAGES + 1
    assert len({(e["transaction"], e["lot"]) for e in entries}) == USAGES + 1
    assert [e["amount_credit_seconds"] for e in entries] == [
        *(-n for n in range(USAGES, 0, -1)),
        10**9,
    ]
    stamps = [dt.datetime.fromisoformat(e["created_at"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert entries[0]["kind"] == "usage"
    assert entries[0]["sandbox"] == f"sb-{USAGES % 3}"
    assert entries[-1]["kind"] == "grant"
    assert entries[-1]["sandbox"] is None


def test_ledger_page_size(busy_ledger, owner_api):
    body = owner_api.get(f"{API}/credits/ledger", {"page_size": 7}).json()
    assert len(body["results"]) == 7
    assert len(_follow(owner_api, f"{API}/credits/ledger", {"page_size": 7})) == USAGES + 1
    capped = owner_api.get(f"{API}/credits/ledger", {"page_size": 10_000}).json()
    assert len(capped["results"]) == USAGES + 1  # max 200


def test_ledger_filters(busy_ledger, owner_api):
    _, half = busy_ledger
    ledger = f"{API}/credits/ledger"
    usage = _follow(owner_api, ledger, {"kind": "usage"})
    assert len(usage) == USAGES
    assert {e["kind"] for e in usage} == {"usage"}
    grants = _follow(owner_api, ledger, {"kind": "grant"})
    assert [e["amount_credit_seconds"] for e in grants] == [10**9]
    assert _follow(owner_api, ledger, {"kind": "expiry"}) == []
    later = _follow(owner_api, ledger, {"since": half.isoformat()})
    assert sorted(-e["amount_credit_seconds"] for e in later) == list(
        range(USAGES // 2 + 1, USAGES + 1)
    )
    earlier = _follow(owner_api, ledger, {"until": half.isoformat(), "kind": "usage"})
    assert sorted(-e["amount_credit_seconds"] for e in earlier) == list(range(1, USAGES // 2 + 1))
    window = _follow(owner_api, ledger, {"since": half.isoformat(), "until": half.isoformat()})
    assert window == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "bonus"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01T00:00:00Z"}, "until"),
        ({"organisation": "not-a-uuid"}, "organisation"),
    ],
)
def test_ledger_bad_filters_are_400(busy_ledger, owner_api, params, field):
    error = assert_error(owner_api.get(f"{API}/credits/ledger", params), 400, "invalid")
    assert field in error["fields"]


@pytest.mark.parametrize(
    "params",
    [
        {"since": "0001-01-01T00:00:00"},
        {"until": "0001-01-01T00:00:00"},
        {"since": "9999-12-31T23:59:59"},
        {"until": "9999-12-31T23:59:59-05:00"},
    ],
)
def test_ledger_extreme_dates_are_not_server_errors(busy_ledger, owner, params):
    client = key_client(make_key(user=owner)[1], raise_request_exception=False)
    response = client.get(f"{API}/credits/ledger", params)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 400:
        assert_error(response, 400, "invalid")


def test_ledger_of_an_unfunded_organisation_is_empty(organisation, owner_api):
    body = owner_api.get(f"{API}/credits/ledger").json()
    assert body["results"] == []
    assert body["next"] is None


# --- Statements -----------------------------------------------------------------------------


def test_statement_for_this_month(busy_ledger, owner_api):
    account, _ = busy_ledger
    month = _this_month()
    body = owner_api.get(f"{API}/credits/statements/{month}").json()
    used = USAGES * (USAGES + 1) // 2
    assert body["account"] == str(account.public_id)
    assert body["month"] == month
    assert body["opening_credit_seconds"] == 0
    assert body["totals_credit_seconds"]["grants"] == 10**9
    assert body["totals_credit_seconds"]["usage"] == -used
    assert body["closing_credit_seconds"] == 10**9 - used
    assert sum(row["credit_seconds"] for row in body["usage"]) == -used
    assert {row["sandbox"] for row in body["usage"]} == {"sb-0", "sb-1", "sb-2"}
    assert [line["kind"] for line in body["lines"]] == ["grant"]


def test_statement_of_an_empty_month(busy_ledger, owner_api):
    body = owner_api.get(f"{API}/credits/statements/2020-01").json()
    assert body["opening_credit_seconds"] == body["closing_credit_seconds"] == 0
    assert body["lines"] == []
    assert body["usage"] == []


def test_statement_of_an_unfunded_organisation(organisation, owner_api):
    body = owner_api.get(f"{API}/credits/statements/{_this_month()}").json()
    assert body["account"] is None
    assert body["closing_credit_seconds"] == 0


@pytest.mark.parametrize("month", ["2025-13", "2025-00", "march", "2025-1-1", "202501", "-"])
def test_statement_of_a_bad_month_is_404(busy_ledger, owner_api, month):
    assert_error(owner_api.get(f"{API}/credits/statements/{month}"), 404, "not_found")


@pytest.mark.parametrize("month", ["0001-01", "9999-12"])
def test_statement_at_the_ends_of_the_calendar_is_not_a_server_error(busy_ledger, owner, month):
    client = key_client(make_key(user=owner)[1], raise_request_exception=False)
    response = client.get(f"{API}/credits/statements/{month}")
    assert response.status_code in (200, 404), response.status_code


# --- Credit applications: create, list, retrieve --------------------------------------------


def test_create_an_application(organisation, owner, owner_api):
    teammate = MembershipFactory(organisation=organisation, role=Role.MEMBER).user
    response = owner_api.post(
        APPLICATIONS, {**APPLICATION, "team_members": [teammate.hub_username]}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    application = CreditApplication.objects.get()
    assert body["id"] == str(application.public_id)
    assert body["organisation"] == str(organisation.public_id)
    assert body["state"] == "draft"
    assert body["submitted_at"] is None
    assert body["team_members"] == [teammate.hub_username]
    assert {k: body[k] for k in APPLICATION} == APPLICATION
    assert application.created_by == owner


def test_create_with_the_organisation_named(organisation, owner_api):
    response = owner_api.post(
        APPLICATIONS, {**APPLICATION, "organisation": str(organisation.public_id)}, format="json"
    )
    assert response.status_code == 201


def test_create_through_a_service_key_acts_as_an_owner(organisation, owner):
    client = key_client(make_key(organisation=organisation, acting_user=owner)[1])
    response = client.post(APPLICATIONS, APPLICATION, format="json")
    assert response.status_code == 201, response.content
    assert CreditApplication.objects.get().created_by == owner


def test_create_with_missing_fields_is_400_naming_them(organisation, owner_api):
    error = assert_error(owner_api.post(APPLICATIONS, {}, format="json"), 400, "invalid")
    required = {
        "title",
        "summary",
        "sector",
        "requested_gpu_hours",
        "duration_months",
        "data_sensitivity",
    }
    assert set(error["fields"]) == required
    assert not CreditApplication.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sector": "astrology"}, "sector"),
        ({"requested_gpu_hours": 0}, "requested_gpu_hours"),
        ({"requested_gpu_hours": 1_000_001}, "requested_gpu_hours"),
        ({"requested_gpu_hours": "many"}, "requested_gpu_hours"),
        ({"duration_months": 25}, "duration_months"),
        ({"gpu_class": "tpu"}, "gpu_class"),
        ({"data_sensitivity": "secret"}, "data_sensitivity"),
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "nul\x00byte"}, "title"),
        ({"team_members": "not-a-list"}, "team_members"),
        ({"team_members": ["nobody-here"]}, "team_members"),
        ({"organisation": "not-a-uuid"}, "organisation"),
    ],
)
def test_create_with_invalid_fields_is_400_naming_them(organisation, owner_api, overrides, field):
    response = owner_api.post(APPLICATIONS, {**APPLICATION, **overrides}, format="json")
    error = assert_error(response, 400, "invalid")
    assert field in error["fields"], error
    assert not CreditApplication.objects.exists()


def test_create_with_a_team_member_from_elsewhere_is_400(organisation, owner_api):
    stranger = UserFactory()
    response = owner_api.post(
        APPLICATIONS, {**APPLICATION, "team_members": [stranger.hub_username]}, format="json"
    )
    assert "team_members" in assert_error(response, 400)["fields"]


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_create_with_a_body_that_is_not_an_object_is_400(organisation, owner_api, body):
    assert_error(owner_api.post(APPLICATIONS, body, format="json"), 400, "invalid")


def test_create_by_a_plain_member_is_403(organisation, member):
    client = key_client(make_key(user=member)[1])
    assert_error(client.post(APPLICATIONS, APPLICATION, format="json"), 403, "permission_denied")
    assert not CreditApplication.objects.exists()


def test_create_without_an_organisation_is_400(user):
    client = key_client(make_key(user=user)[1])
    error = assert_error(client.post(APPLICATIONS, APPLICATION, format="json"), 400)
    assert "organisation" in error["fields"]


def test_create_for_a_suspended_organisation_is_refused(organisation, owner_api):
    organisation.is_active = False
    organisation.save(update_fields=["is_active"])
    assert_error(owner_api.post(APPLICATIONS, APPLICATION, format="json"), 400, "invalid")
    assert not CreditApplication.objects.exists()


def test_list_and_filter_by_state(organisation, owner, owner_api):
    draft = application_make(organisation, owner)
    sent = application_make(organisation, owner, submit=True)
    everything = owner_api.get(APPLICATIONS).json()
    assert [a["id"] for a in everything["results"]] == [str(sent.public_id), str(draft.public_id)]
    only = owner_api.get(APPLICATIONS, {"state": "submitted"}).json()["results"]
    assert [a["id"] for a in only] == [str(sent.public_id)]
    error = assert_error(owner_api.get(APPLICATIONS, {"state": "pending"}), 400, "invalid")
    assert "state" in error["fields"]


def test_list_pages(organisation, owner, owner_api):
    for n in range(5):
        application_make(organisation, owner, title=f"Project {n}")
    seen = _follow(owner_api, APPLICATIONS, {"page_size": 2})
    assert [a["title"] for a in seen] == [f"Project {n}" for n in range(4, -1, -1)]


def test_retrieve(organisation, owner, owner_api):
    application = application_make(organisation, owner)
    body = owner_api.get(f"{APPLICATIONS}/{application.public_id}").json()
    assert body["id"] == str(application.public_id)
    assert body["title"] == APPLICATION["title"]
    assert_error(owner_api.get(f"{APPLICATIONS}/{uuid.uuid4()}"), 404, "not_found")


# --- Submit ---------------------------------------------------------------------------------


def test_submit_then_submit_again_is_409(organisation, owner, owner_api):
    application = application_make(organisation, owner)
    response = owner_api.post(f"{APPLICATIONS}/{application.public_id}/submit")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "submitted"
    assert response.json()["submitted_at"]
    again = owner_api.post(f"{APPLICATIONS}/{application.public_id}/submit")
    assert_error(again, 409, "wrong_state")
    application.refresh_from_db()
    assert application.state == ApplicationState.SUBMITTED
    assert application.events.count() == 1


def test_submit_an_unknown_application_is_404(organisation, owner_api):
    assert_error(owner_api.post(f"{APPLICATIONS}/{uuid.uuid4()}/submit"), 404, "not_found")


def test_submit_by_a_plain_member_is_403(organisation, owner, member):
    application = application_make(organisation, owner)
    client = key_client(make_key(user=member)[1])
    response = client.post(f"{APPLICATIONS}/{application.public_id}/submit")
    assert_error(response, 403, "permission_denied")
    application.refresh_from_db()
    assert application.state == ApplicationState.DRAFT


# --- Approve and reject ---------------------------------------------------------------------


def test_approve_as_a_pm_through_a_key(organisation, submitted, pm_api, programme_manager):
    response = pm_api.post(f"{APPLICATIONS}/{submitted.public_id}/approve", APPROVE, "json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "approved"
    assert body["decided_at"]
    grant = CreditGrant.objects.get(application=submitted)
    assert grant.amount == gpu_hours_to_credit_seconds(500)
    assert grant.account.organisation == organisation
    assert grant.created_by == programme_manager
    assert str(grant.rate_pkr_per_gpu_hour) == "750.00"
    last_day = dt.date.fromisoformat(APPROVE["expires_on"])
    assert timezone.localtime(grant.expires_at).date() == last_day + dt.timedelta(days=1)


def test_approve_with_the_write_scope_alone(organisation, submitted, programme_manager):
    """The view declares programme:write as all it needs. A key with just that either approves,
    or is told which other scope it lacks; never a 404 for an application that exists."""
    client = key_client(make_key(user=programme_manager, scopes=["programme:write"])[1])
    response = client.post(f"{APPLICATIONS}/{submitted.public_id}/approve", APPROVE, "json")
    if response.status_code == 403:
        assert "programme:read" in assert_error(response, 403, "permission_denied")["message"]
        assert not CreditGrant.objects.exists()
    else:
        assert response.status_code == 200, response.content
        assert CreditGrant.objects.filter(application=submitted).exists()


def test_partial_approval(submitted, pm_api):
    response = pm_api.post(
        f"{APPLICATIONS}/{submitted.public_id}/approve", {**APPROVE, "gpu_hours": 100}, "json"
    )
    assert response.json()["state"] == "partially_approved"
    assert CreditGrant.objects.get().amount == gpu_hours_to_credit_seconds(100)


def test_approve_twice_is_409_and_grants_once(submitted, pm_api):
    url = f"{APPLICATIONS}/{submitted.public_id}/approve"
    assert pm_api.post(url, APPROVE, "json").status_code == 200
    assert_error(pm_api.post(url, APPROVE, "json"), 409, "wrong_state")
    assert CreditGrant.objects.count() == 1


def test_approve_a_draft_is_409(organisation, owner, pm_api):
    draft = application_make(organisation, owner)
    assert_error(pm_api.post(f"{APPLICATIONS}/{draft.public_id}/approve", APPROVE, "json"), 409)
    assert not CreditGrant.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gpu_hours": 0}, "gpu_hours"),
        ({"gpu_hours": None}, "gpu_hours"),
        ({"expires_on": "someday"}, "expires_on"),
        ({"expires_on": "2000-01-01"}, "expires_on"),  # the name the client sent
        ({"rate_pkr_per_gpu_hour": "-1"}, "rate_pkr_per_gpu_hour"),
        ({"rate_pkr_per_gpu_hour": "1.234"}, "rate_pkr_per_gpu_hour"),
    ],
)
def test_approve_with_bad_input_is_400(submitted, pm_api, overrides, field):
    response = pm_api.post(
        f"{APPLICATIONS}/{submitted.public_id}/approve", {**APPROVE, **overrides}, "json"
    )
    error = assert_error(response, 400, "invalid")
    assert field in error["fields"], error
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.SUBMITTED
    assert not CreditGrant.objects.exists()


def test_approve_until_the_last_day_of_the_calendar_is_not_a_server_error(
    submitted, pm_key, programme_manager
):
    client = key_client(pm_key[1], raise_request_exception=False)
    response = client.post(
        f"{APPLICATIONS}/{submitted.public_id}/approve",
        {**APPROVE, "expires_on": "9999-12-31"},
        "json",
    )
    assert response.status_code in (200, 400), response.status_code


def test_approve_by_someone_who_is_not_a_pm_is_403(organisation, owner, submitted):
    owner_client = key_client(make_key(user=owner)[1])
    error = assert_error(
        owner_client.post(f"{APPLICATIONS}/{submitted.public_id}/approve", APPROVE, "json"), 403
    )
    assert "programme:write" in error["message"]
    session = APIClient()
    session.force_login(owner)
    response = session.post(f"{APPLICATIONS}/{submitted.public_id}/approve", APPROVE, "json")
    assert_error(response, 403, "permission_denied")
    submitted.refresh_from_db()
    assert submitted.state == ApplicationState.SUBMITTED
    assert not CreditGrant.objects.exists()


def test_a_pm_who_belongs_to_the_organisation_cannot_decide(
    organisation, submitted, pm_api, pm_key
):
    MembershipFactory(organisation=organisation, user=pm_key[0].user, role=Role.MEMBER)
    response = pm_api.post(f"{APPLICATIONS}/{submitted.public_id}/approve", APPROVE, "json")
    assert_error(response, 403, "permission_denied")
    assert not CreditGrant.objects.exists()


def test_a_pm_sees_every_organisations_applications(organisation, owner, submitted, pm_api):
    other_org = OrganisationFactory()
    other = application_make(
        other_org, MembershipFactory(organisation=other_org, role=Role.OWNER).user
    )
    listed = {a["id"] for a in pm_api.get(APPLICATIONS).json()["results"]}
    assert listed == {str(submitted.public_id), str(other.public_id)}


def test_reject(submitted, pm_api):
    url = f"{APPLICATIONS}/{submitted.public_id}/reject"
    for bad in ({}, {"reason": ""}, {"reason": "   "}):
        assert "reason" in assert_error(pm_api.post(url, bad, "json"), 400)["fields"]
    response = pm_api.post(url, {"reason": "Out of scope."}, "json")
    assert response.status_code == 200
    assert response.json()["state"] == "rejected"
    assert_error(pm_api.post(url, {"reason": "Again."}, "json"), 409, "wrong_state")
    assert not CreditGrant.objects.exists()


def test_a_suspended_organisations_application_cannot_be_approved(organisation, submitted, pm_api):
    organisation.is_active = False
    organisation.save(update_fields=["is_active"])
    response = pm_api.post(f"{APPLICATIONS}/{submitted.public_id}/approve", APPROVE, "json")
    assert_error(response, 400, "invalid")
    assert not CreditGrant.objects.exists()
