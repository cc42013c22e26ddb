"""Who may call the API: keys (every way one can be wrong), scopes, the owner's limits, other
organisations' data, the error shape, secrets kept out of logs and the database, sessions."""

import datetime as dt
import logging

import pytest
from django.apps import apps
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.crypto import get_random_string
from rest_framework.test import APIClient

from portal.apikeys import tokens
from portal.apikeys.models import ApiKey
from portal.apikeys.services import apikey_revoke
from portal.core.exceptions import ApplicationError
from portal.credits.models import CreditApplication
from portal.organisations.models import Role
from portal.users.services import programme_manager_revoke
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

from .conftest import (
    API,
    APPLICATION,
    application_make,
    approval,
    assert_error,
    bearer,
    key_client,
    make_key,
)

pytestmark = pytest.mark.django_db
ME = f"{API}/me"
BALANCE = f"{API}/credits/balance"


def _get(path, **headers):
    return APIClient().get(path, **headers)


def _with_checksum(body: str) -> str:
    return body + tokens._checksum(body)


# --- 401: every way a key can be wrong gets the same answer ---------------------------------


def test_no_key_is_401_with_a_challenge():
    response = _get(ME)
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer nonsense",
        "Bearer nac_",
        "Bearer two words",
        "bearer nac_0123456789ab_" + "A" * 49,
        "Bearer nac_0123456789AB_" + "A" * 49,  # upper-case key id: not the format
        "Bearer nac_\u00e90123456789a_" + "A" * 49,  # not ASCII
    ],
)
def test_malformed_key_is_401(user, header):
    assert_error(_get(ME, HTTP_AUTHORIZATION=header), 401, "not_authenticated")


def _all_401_bodies_equal(responses):
    bodies = {r.content for r in responses}
    assert len(bodies) == 1, bodies  # no oracle: which check failed is not told


def test_bad_checksum_unknown_id_and_wrong_secret_are_401_alike(user):
    key, full = make_key(user=user)
    good = _get(ME, **bearer(full))
    assert good.status_code == 200
    last = full[-1]
    bad_checksum = full[:-1] + ("A" if last != "A" else "B")
    unknown_id, _, _ = tokens.key_generate()  # well formed, valid checksum, never stored
    wrong_secret = _with_checksum(f"nac_{key.key_id}_" + "x" * tokens.SECRET_LENGTH)
    assert tokens.key_parse(bad_checksum) is None
    assert tokens.key_parse(unknown_id) is not None
    assert tokens.key_parse(wrong_secret) is not None
    responses = [_get(ME, **bearer(raw)) for raw in (bad_checksum, unknown_id, wrong_secret)]
    for response in responses:
        assert_error(response, 401, "not_authenticated")
    _all_401_bodies_equal([*responses, _get(ME, HTTP_AUTHORIZATION="Bearer nonsense")])


def test_bad_checksum_is_refused_without_asking_the_database(user):
    _, full = make_key(user=user)
    bad_checksum = full[:-1] + ("A" if full[-1] != "A" else "B")
    with CaptureQueriesContext(connection) as queries:
        assert _get(ME, **bearer(bad_checksum)).status_code == 401
    assert not [q for q in queries if "apikeys_apikey" in q["sql"]], queries.captured_queries


def test_revoked_key_is_401_on_the_very_next_request(user):
    key, full = make_key(user=user)
    client = key_client(full)
    assert client.get(ME).status_code == 200
    apikey_revoke(key=key, acting_user=user)
    assert_error(client.get(ME), 401, "not_authenticated")


def test_expired_key_is_401(user):
    key, full = make_key(user=user)
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert_error(_get(ME, **bearer(full)), 401, "not_authenticated")


def test_key_of_a_deactivated_person_is_401(user):
    _, full = make_key(user=user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert_error(_get(ME, **bearer(full)), 401, "not_authenticated")


def test_service_key_of_a_suspended_organisation_is_401(organisation, owner):
    _, full = make_key(organisation=organisation, acting_user=owner)
    assert _get(ME, **bearer(full)).json()["kind"] == "organisation"
    organisation.is_active = False
    organisation.save(update_fields=["is_active"])
    assert_error(_get(ME, **bearer(full)), 401, "not_authenticated")


# --- 403: scopes ----------------------------------------------------------------------------


def test_missing_scope_is_403_naming_the_scope(user):
    _, full = make_key(user=user, scopes=["profile:read"])
    client = key_client(full)
    assert client.get(ME).status_code == 200
    error = assert_error(client.get(BALANCE), 403, "permission_denied")
    assert "credits:read" in error["message"]
    error = assert_error(client.post(f"{API}/credit-applications", {}, format="json"), 403)
    assert "applications:write" in error["message"]


def test_per_method_scopes(organisation, owner):
    _, full = make_key(user=owner, scopes=["applications:read"])
    client = key_client(full)
    assert client.get(f"{API}/credit-applications").status_code == 200
    error = assert_error(client.post(f"{API}/credit-applications", APPLICATION, format="json"), 403)
    assert "applications:write" in error["message"]
    assert not CreditApplication.objects.exists()


# --- A key never holds more than its owner --------------------------------------------------


def test_a_person_who_is_not_a_pm_cannot_make_a_key_with_programme_scopes(user):
    for scopes in (["programme:read"], ["programme:write"], ["profile:read", "programme:read"]):
        with pytest.raises(ApplicationError) as refused:
            make_key(user=user, scopes=scopes)
        assert refused.value.field == "scopes"
    assert not ApiKey.objects.exists()


def test_a_service_key_cannot_have_programme_scopes(organisation, owner):
    with pytest.raises(ApplicationError):
        make_key(organisation=organisation, acting_user=owner, scopes=["programme:read"])


def test_pm_key_stops_working_for_programme_operations_when_the_role_is_revoked(
    organisation, owner, programme_manager
):
    first = application_make(organisation, owner, submit=True)
    second = application_make(organisation, owner, submit=True)
    _, full = make_key(
        user=programme_manager,
        scopes=["programme:read", "programme:write", "applications:read", "profile:read"],
    )
    client = key_client(full)
    assert set(client.get(ME).json()["scopes"]) >= {"programme:read", "programme:write"}
    approve = approval(gpu_hours=10)
    ok = client.post(f"{API}/credit-applications/{first.public_id}/approve", approve, "json")
    assert ok.status_code == 200, ok.content

    programme_manager_revoke(user=programme_manager, acting_user=None)

    me = client.get(ME).json()
    assert "programme:write" not in me["scopes"]
    assert me["programme_manager"] is False
    for action, body in (("approve", approve), ("reject", {"reason": "No."})):
        response = client.post(
            f"{API}/credit-applications/{second.public_id}/{action}", body, "json"
        )
        error = assert_error(response, 403, "permission_denied")
        assert "programme:write" in error["message"]
    # programme:read no longer shows other organisations' applications
    listed = client.get(f"{API}/credit-applications").json()["results"]
    assert listed == []
    second.refresh_from_db()
    assert second.state == "submitted"


# --- 404 across organisations ---------------------------------------------------------------


def test_another_organisations_data_is_404(organisation, owner):
    theirs_org = OrganisationFactory()
    theirs_owner = MembershipFactory(organisation=theirs_org, role=Role.OWNER).user
    theirs = application_make(theirs_org, theirs_owner)
    _, full = make_key(user=owner)
    client = key_client(full)
    base = f"{API}/credit-applications/{theirs.public_id}"
    assert_error(client.get(base), 404, "not_found")
    assert_error(client.post(f"{base}/submit"), 404, "not_found")
    assert client.get(f"{API}/credit-applications").json()["results"] == []
    other = {"organisation": str(theirs_org.public_id)}
    assert_error(client.get(BALANCE, other), 404, "not_found")
    assert_error(client.get(f"{API}/credits/ledger", other), 404, "not_found")
    assert_error(client.get(f"{API}/credits/statements/2025-01", other), 404, "not_found")
    response = client.post(f"{API}/credit-applications", {**APPLICATION, **other}, format="json")
    assert_error(response, 404, "not_found")
    theirs.refresh_from_db()
    assert theirs.state == "draft"
    assert CreditApplication.objects.count() == 1


def test_a_service_key_sees_only_its_own_organisation(organisation, owner):
    theirs_org = OrganisationFactory()
    MembershipFactory(organisation=theirs_org, user=owner, role=Role.OWNER)  # owner of both
    theirs = application_make(theirs_org, owner)
    _, full = make_key(organisation=organisation, acting_user=owner)
    client = key_client(full)
    assert_error(client.get(f"{API}/credit-applications/{theirs.public_id}"), 404, "not_found")
    other = {"organisation": str(theirs_org.public_id)}
    assert_error(client.get(BALANCE, other), 404, "not_found")


# --- One error shape, whatever went wrong ---------------------------------------------------


def test_every_error_has_the_one_shape(organisation, owner, user):
    _, full = make_key(user=owner)
    client = key_client(full)
    assert_error(_get(ME), 401, "not_authenticated")
    assert_error(_get(ME, HTTP_AUTHORIZATION="Bearer x"), 401, "not_authenticated")
    assert_error(key_client(make_key(user=user, scopes=["profile:read"])[1]).get(BALANCE), 403)
    assert_error(client.get(f"{API}/credit-applications/00000000-0000-0000-0000-000000000000"), 404)
    assert_error(client.delete(ME), 405, "method_not_allowed")
    assert_error(client.get(ME, HTTP_ACCEPT="text/html"), 406, "not_acceptable")
    bad_json = client.post(
        f"{API}/credit-applications", data="{not json", content_type="application/json"
    )
    assert_error(bad_json, 400, "invalid")
    form = client.post(f"{API}/credit-applications", data="a=b", content_type="text/plain")
    assert_error(form, 415, "unsupported_media_type")
    error = assert_error(client.post(f"{API}/credit-applications", {}, format="json"), 400)
    assert {"title", "summary", "sector"} <= set(error["fields"])
    assert_error(client.get(f"{API}/credits/ledger", {"kind": "nope"}), 400, "invalid")
    assert_error(client.get(f"{API}/credits/ledger", {"cursor": "garbage"}), 404, "not_found")


def test_an_unknown_path_under_the_api_answers_in_the_error_shape(owner):
    _, full = make_key(user=owner)
    assert_error(key_client(full).get(f"{API}/no-such-endpoint"), 404, "not_found")


# --- The secret stays secret ----------------------------------------------------------------


def _all_loggers_at_debug(caplog):
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)


def test_the_full_key_never_reaches_the_logs(caplog, organisation, owner):
    key, full = make_key(user=owner)
    secret = full.split("_")[2][: tokens.SECRET_LENGTH]
    bad_checksum = full[:-1] + ("A" if full[-1] != "A" else "B")
    _all_loggers_at_debug(caplog)
    client = key_client(full)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(ME).status_code == 200
        assert client.get(BALANCE).status_code == 200
        assert client.post(f"{API}/credit-applications", {}, format="json").status_code == 400
        assert _get(ME, **bearer(bad_checksum)).status_code == 401
        assert _get(ME, HTTP_AUTHORIZATION=f"Bearer {full} extra").status_code == 401
        apikey_revoke(key=key, acting_user=owner)
        assert client.get(ME).status_code == 401
    unauthorized = [
        r for r in caplog.records if r.name == "django.request" and r.levelno == logging.WARNING
    ]
    assert len(unauthorized) >= 3  # 401s are logged (the capture works) ...
    assert any("Unauthorized" in r.getMessage() for r in unauthorized)
    for record in caplog.records:  # ... and no record holds the secret, however formatted
        text = f"{record.getMessage()} {record.__dict__!r} {record.exc_text or ''}"
        for needle in (full, bad_checksum, secret):
            assert needle not in text, record
    assert secret not in caplog.text
    for query in queries.captured_queries:
        assert secret not in query["sql"], query


def _every_value_in_the_database() -> str:
    chunks = []
    for model in apps.get_models():
        if not model._meta.managed or model._meta.proxy:
            continue
        for row in model._base_manager.values_list():
            chunks.append(repr(row))
    return "\n".join(chunks)


def test_the_full_key_is_stored_nowhere(organisation, owner):
    mail.outbox.clear()
    key, full = make_key(user=owner)
    service_key, service_full = make_key(organisation=organisation, acting_user=owner)
    for client in (key_client(full), key_client(service_full)):
        assert client.get(ME).status_code == 200
        assert (
            client.post(
                f"{API}/credit-applications",
                APPLICATION,
                format="json",
                HTTP_IDEMPOTENCY_KEY="stored-nowhere",
            ).status_code
            == 201
        )
    for k, raw in ((key, full), (service_key, service_full)):
        secret = raw[len(f"nac_{k.key_id}_") :][: tokens.SECRET_LENGTH]
        row = ApiKey.objects.filter(pk=k.pk).values_list().get()
        for value in row:
            assert raw not in str(value), value
            assert secret not in str(value), value
        assert k.secret_hash != secret
        assert len(k.secret_hash) == 64
        everything = _every_value_in_the_database()
        assert raw not in everything
        assert secret not in everything
        for message in mail.outbox:
            assert secret not in f"{message.subject} {message.body}"


# --- last_used_at: at most one write a minute -----------------------------------------------


def _key_updates(queries) -> list[str]:
    return [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "apikeys_apikey"')
    ]


def test_last_used_is_written_at_most_once_a_minute(user):
    key, full = make_key(user=user)
    assert key.last_used_at is None
    client = key_client(full)
    with CaptureQueriesContext(connection) as first:
        assert client.get(ME, REMOTE_ADDR="203.0.113.7").status_code == 200
    assert len(_key_updates(first)) == 1
    key.refresh_from_db()
    written_at = key.last_used_at
    assert written_at is not None
    assert key.last_used_ip == "203.0.113.7"
    with CaptureQueriesContext(connection) as second:
        assert client.get(ME, REMOTE_ADDR="203.0.113.8").status_code == 200
        assert client.get(BALANCE, REMOTE_ADDR="203.0.113.8").status_code in (200, 404)
    assert _key_updates(second) == []
    key.refresh_from_db()
    assert (key.last_used_at, key.last_used_ip) == (written_at, "203.0.113.7")

    a_minute_ago = timezone.now() - dt.timedelta(seconds=61)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=a_minute_ago)
    with CaptureQueriesContext(connection) as later:
        assert client.get(ME, REMOTE_ADDR="203.0.113.9").status_code == 200
    assert len(_key_updates(later)) == 1
    key.refresh_from_db()
    assert key.last_used_at > a_minute_ago
    assert key.last_used_ip == "203.0.113.9"


# --- Browser sessions, with CSRF ------------------------------------------------------------


def test_session_auth_reads_without_csrf_but_writes_only_with_it(organisation, owner):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    me = client.get(ME)
    assert me.status_code == 200
    assert me.json()["key"] is None
    assert me.json()["email"] == owner.email

    refused = client.post(f"{API}/credit-applications", APPLICATION, format="json")
    error = assert_error(refused, 403, "permission_denied")
    assert "CSRF" in error["message"]
    assert not CreditApplication.objects.exists()

    token = get_random_string(32)
    client.cookies["csrftoken"] = token
    created = client.post(
        f"{API}/credit-applications", APPLICATION, format="json", HTTP_X_CSRFTOKEN=token
    )
    assert created.status_code == 201, created.content
    assert CreditApplication.objects.get().created_by == owner


def test_a_key_needs_no_csrf_token(organisation, owner):
    _, full = make_key(user=owner)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(**bearer(full))
    response = client.post(f"{API}/credit-applications", APPLICATION, format="json")
    assert response.status_code == 201, response.content


def test_a_session_of_a_deactivated_person_is_401(owner):
    client = APIClient()
    client.force_login(owner)
    assert client.get(ME).status_code == 200
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    assert_error(client.get(ME), 401, "not_authenticated")


def test_a_person_without_a_key_or_session_sees_nothing(user):
    other = UserFactory()
    make_key(user=other)
    assert_error(_get(BALANCE), 401)
    assert_error(_get(f"{API}/credit-applications"), 401)
