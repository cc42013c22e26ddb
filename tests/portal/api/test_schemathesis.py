"""Schemathesis against the live OpenAPI schema, in-process over WSGI: every operation, with a
real key, data that fits the schema and data that does not.

Checks: no 5xx (not_a_server_error), and every documented response matches its schema
(response_schema_conformance). It runs in `make test` (no marker, no skip). Deterministic by
default; API_FUZZ_RANDOM=1 explores new examples on each run, API_FUZZ_SCALE=10 ten times as
many.

status_code_conformance too: every status the API answers with is documented (the error
responses are added to each operation by portal.core.api.schema).
"""

import datetime as dt
import os
from collections import Counter, defaultdict

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from portal.credits.services import usage_charge
from tests.portal.credits.helpers import lot, org_account

from .conftest import PERSON_SCOPES, application_make, make_key

pytestmark = pytest.mark.django_db
HOST = "127.0.0.1"
SCALE = float(os.environ.get("API_FUZZ_SCALE", "1"))  # more examples, to explore by hand
MANY, FEW = int(100 * SCALE), int(25 * SCALE)  # examples per operation and generation mode
MANY_OPERATIONS = {
    "GET /api/v1/credits/balance",
    "GET /api/v1/credits/ledger",
    "GET /api/v1/credit-applications",
    "POST /api/v1/credit-applications",
}
PROGRAMME_OPERATIONS = {
    "GET /api/v1/credit-applications",
    "GET /api/v1/credit-applications/{public_id}",
    "POST /api/v1/credit-applications/{public_id}/approve",
    "POST /api/v1/credit-applications/{public_id}/reject",
}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
RANDOM = os.environ.get("API_FUZZ_RANDOM") == "1"


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, minus the per-request connection cleanup (as Django's own test
    client does): the requests run inside this test's transaction, on its connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(organisation, owner, programme_manager):
    """A funded organisation with usage, drafts and submitted applications, its owner's key
    (every scope a person who is not a PM may hold), and a PM's key."""
    account = org_account(organisation)
    lot(account, 10**8)
    lot(account, 5 * 10**6, days=400)
    for n in range(5):
        usage_charge(
            account=account,
            credit_seconds=3600 * (n + 1),
            idempotency_key=f"fuzz-usage:{n}",
            metadata={"sandbox": f"sb-{n}", "profile": "h100-1g"},
        )
    drafts = [application_make(organisation, owner, title=f"Draft {n}") for n in range(3)]
    submitted = [application_make(organisation, owner, submit=True) for _ in range(6)]
    _, owner_key = make_key(user=owner, scopes=PERSON_SCOPES)
    _, pm_key = make_key(
        user=programme_manager,
        scopes=["applications:read", "programme:read", "programme:write", "profile:read"],
    )
    today = timezone.localdate()
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    return {
        "owner": owner_key,
        "pm": pm_key,
        "applications": [str(a.public_id) for a in drafts + submitted],
        "months": [today.strftime("%Y-%m"), last_month, "2020-02"],
        "organisation": str(organisation.public_id),
    }


def _strategy(operation, mode, headers, world):
    """The operation's generated cases, half of them aimed at things that exist."""
    base = {"generation_mode": mode, "headers": headers}
    strategies = [operation.as_strategy(**base)]
    names = {p.name for p in operation.path_parameters}
    if "public_id" in names:
        strategies += [
            operation.as_strategy(**base, path_parameters={"public_id": public_id})
            for public_id in world["applications"]
        ]
    if "organisation" in {p.name for p in operation.query}:
        strategies.append(
            operation.as_strategy(**base, query={"organisation": world["organisation"]})
        )
    if "month" in names:
        strategies += [
            operation.as_strategy(**base, path_parameters={"month": month})
            for month in world["months"]
        ]
    if "cursor" in {p.name for p in operation.query}:  # a random cursor is just a 404
        strategies += [
            s.filter(lambda case: "cursor" not in (case.query or {})) for s in strategies
        ]
    if len(strategies) == 1:
        return strategies[0]
    return st.one_of(strategies[0], st.one_of(strategies[1:]))


def _hypothesis_test(operation, mode, *, headers, world, examples, seen: Counter):
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=_strategy(operation, mode, headers, world))
    def run(case):
        response = case.call(headers=headers)
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run


def _fuzz(operation, *, who, world, examples, statuses) -> list[str]:
    """Run one operation in both generation modes; the failure reports (empty: none)."""
    headers = {"Authorization": f"Bearer {world[who]}", "Host": HOST}
    failures = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        seen = statuses[(operation.label, who, mode.value)]
        run = _hypothesis_test(
            operation, mode, headers=headers, world=world, examples=examples, seen=seen
        )
        try:
            run()
        except Unsatisfiable:
            # Nothing to get wrong (GET /me has no parameters): no negative cases exist.
            assert mode == GenerationMode.NEGATIVE, operation.label
            seen["none possible"] = 0
        except (Exception, BaseExceptionGroup) as exc:  # all operations' failures, together
            report = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            failures.append(f"--- {operation.label} ({who} key, {mode.value}) ---\n{report}")
    return failures


@pytest.fixture
def unlimited_keys(settings):
    settings.API_KEY_RATE_LIMIT = (10**9, 60)  # the rate limit has a test of its own


def test_the_api_against_its_schema(wsgi_app, world, unlimited_keys):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app, headers={"Host": HOST})
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert labels >= MANY_OPERATIONS | PROGRAMME_OPERATIONS, labels
    assert len(labels) >= 10, labels
    statuses: dict = defaultdict(Counter)
    failures = []
    for operation in operations:
        examples = MANY if operation.label in MANY_OPERATIONS else FEW
        failures += _fuzz(operation, who="owner", world=world, examples=examples, statuses=statuses)
    for operation in operations:  # the decisions, by someone allowed to take them
        if operation.label in PROGRAMME_OPERATIONS:
            failures += _fuzz(operation, who="pm", world=world, examples=FEW, statuses=statuses)
    summary = "\n".join(
        f"{label} ({who} key, {mode}): {dict(sorted(counts.items(), key=str))}"
        for (label, who, mode), counts in sorted(statuses.items())
    )
    assert not failures, "\n\n".join(failures) + "\n\nStatuses seen:\n" + summary
    # the run reached past authentication: successes in every operation the owner may call
    for label in MANY_OPERATIONS:
        success = 200 if label.startswith("GET") else 201
        assert statuses[(label, "owner", "positive")][success] > 0, summary
