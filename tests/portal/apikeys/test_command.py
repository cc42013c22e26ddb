"""`manage.py apikey create|list|revoke`: the key printed once, lists without secrets, clear
errors that change nothing."""

import datetime as dt
import io

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from portal.apikeys.models import ApiKey
from portal.apikeys.services import apikey_create
from portal.audit.models import AuditEvent
from portal.organisations.models import Role
from tests.factories import MembershipFactory, UserFactory

from .helpers import api_get, assert_secret_stored_nowhere, secret_of

pytestmark = pytest.mark.django_db


def _run(*args) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("apikey", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def _create(*args) -> tuple[str, str]:
    return _run("create", *args)


# --- create -------------------------------------------------------------------------------


def test_create_prints_a_working_key_once(user, django_capture_on_commit_callbacks):
    # given a person
    # when an operator makes a key for them
    with django_capture_on_commit_callbacks(execute=True):
        out, err = _create(
            "--email", user.email.upper(), "--name", "batch job", "--scopes",
            "profile:read, credits:read", "--expires-days", "30",
        )  # fmt: skip
    # then stdout is the key alone, stderr says it will not be shown again
    full_key = out.strip()
    assert out == full_key + "\n"
    assert "will not be shown again" in err
    assert full_key not in err
    # and the key is theirs, as asked, made by no one (the CLI), and it works
    key = ApiKey.objects.get()
    assert (key.user, key.organisation, key.name) == (user, None, "batch job")
    assert key.scopes == ["credits:read", "profile:read"]
    assert dt.timedelta(days=29) < key.expires_at - timezone.now() <= dt.timedelta(days=30)
    assert AuditEvent.objects.get(action="apikey.created").actor is None
    assert api_get(full_key).status_code == 200
    assert_secret_stored_nowhere(full_key)
    # and the owner is told by e-mail, without the secret
    assert [m.to for m in mail.outbox] == [[user.email]]
    assert secret_of(full_key) not in mail.outbox[0].body


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_create_an_organisation_key(organisation, role):
    # given an owner or admin of an organisation
    person = MembershipFactory(organisation=organisation, role=role).user
    # when an operator makes a key for the organisation in their name
    out, err = _create(
        "--by", person.email, "--name", "svc", "--scopes", "profile:read,credits:read",
        "--org", organisation.slug,
    )  # fmt: skip
    # then the organisation holds it, and it records who made it and answers for it
    key = ApiKey.objects.get()
    assert (key.user, key.organisation) == (None, organisation)
    assert (key.created_by, key.answerable_by) == (person, person)
    assert person.email in err
    created = AuditEvent.objects.get(action="apikey.created")
    assert created.actor is None  # the CLI
    assert created.data["answerable_by"] == person.email
    assert api_get(out.strip()).json()["kind"] == "organisation"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs --by EMAIL"),
        (["--email", "{person}"], "--email names a person's own key"),
        (["--by", "ghost@example.pk"], "No user with the e-mail address"),
    ],
)
def test_an_organisation_key_without_its_maker_is_refused(organisation, owner, args, message):
    # given an organisation and an operator who does not say who makes its key
    args = [arg.format(person=owner.email) for arg in args]
    # when the command runs
    with pytest.raises(CommandError, match=message):
        _create("--org", organisation.slug, "--name", "svc", "--scopes", "credits:read", *args)
    # then nothing is made
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(action="apikey.created").exists()


def test_a_key_needs_a_holder(user):
    for args in ([], ["--by", user.email]):
        with pytest.raises(CommandError, match="Name the key's holder"):
            _create("--name", "k", "--scopes", "profile:read", *args)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "ghost@example.pk"], "No user with the e-mail address"),
        (["--org", "no-such-org"], "No organisation with the slug 'no-such-org'"),
        (["--scopes", "profile:read,root:all"], "Unknown scopes: root:all."),
        (["--scopes", " , "], "Choose one or more scopes from the list."),
        (["--scopes", "programme:read"], "This key cannot have: programme:read."),
        (["--name", "  "], "Give the key a name."),
        (["--expires-days", "0"], "A key lives from 1 to 365 days."),
        (["--expires-days", "366"], "A key lives from 1 to 365 days."),
    ],
)
def test_create_refusals_are_clear_and_change_nothing(user, args, message):
    # given a person and one bad argument
    options = {"--email": user.email, "--name": "k", "--scopes": "profile:read"}
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    # when the command runs
    with pytest.raises(CommandError, match=message):
        _create(*[part for pair in options.items() for part in pair])
    # then nothing is made
    assert not ApiKey.objects.exists()


def test_a_plain_member_cannot_answer_for_an_organisations_key(organisation, member):
    with pytest.raises(CommandError, match="is not an owner or admin of"):
        _create(
            "--by", member.email, "--name", "svc", "--scopes", "credits:read",
            "--org", organisation.slug,
        )  # fmt: skip
    assert not ApiKey.objects.exists()


def test_create_needs_its_arguments(user):
    with pytest.raises(CommandError, match="--scopes"):
        _create("--email", user.email, "--name", "k")
    with pytest.raises(CommandError):
        _run()  # a subcommand is required


# --- list ---------------------------------------------------------------------------------


def test_list_shows_each_key_the_person_may_see_without_secrets(organisation, owner):
    # given the owner's key (used), the organisation's key (revoked), an expired key and a
    # stranger's key
    own, own_full = apikey_create(
        name="laptop", scopes=["profile:read"], acting_user=owner, user=owner
    )
    ApiKey.objects.filter(pk=own.pk).update(
        last_used_at=timezone.now(), last_used_ip="198.51.100.7"
    )
    org_key, org_full = apikey_create(
        name="svc", scopes=["credits:read", "usage:read"], acting_user=owner,
        organisation=organisation,
    )  # fmt: skip
    ApiKey.objects.filter(pk=org_key.pk).update(revoked_at=timezone.now())
    old, old_full = apikey_create(name="old", scopes=["gpus:read"], acting_user=owner, user=owner)
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - dt.timedelta(days=1))
    stranger = UserFactory()
    apikey_create(name="theirs", scopes=["profile:read"], acting_user=stranger, user=stranger)
    # when the operator lists the owner's keys
    out, _ = _run("list", "--email", owner.email)
    # then one line per key they may see, with its details and state
    lines = {line.split("\t")[1]: line.split("\t") for line in out.splitlines()}
    assert set(lines) == {"laptop", "svc", "old"}
    assert lines["laptop"][0] == own.display_prefix
    assert lines["laptop"][2] == f"me:{owner.email}"
    assert lines["laptop"][3] == "profile:read"
    assert "198.51.100.7" in lines["laptop"][5]
    assert lines["laptop"][7] == "active"
    assert lines["svc"][2:4] == [f"org:{organisation.slug}", "credits:read,usage:read"]
    assert lines["svc"][5] == "last used never"
    assert lines["svc"][7] == "revoked"
    assert lines["old"][7] == "expired"
    # and never a secret
    for full_key in (own_full, org_full, old_full):
        assert full_key not in out
        assert secret_of(full_key) not in out


def test_list_of_someone_without_keys(user):
    out, err = _run("list", "--email", user.email)
    assert out == ""
    assert "has no API keys" in err


def test_list_of_an_unknown_person():
    with pytest.raises(CommandError, match="No user with the e-mail address"):
        _run("list", "--email", "ghost@example.pk")


# --- revoke -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["id", "prefix", "prefix_with_ellipsis"])
def test_revoke_by_key_id_or_prefix(user, form):
    # given a working key
    key, full_key = apikey_create(name="k", scopes=["profile:read"], acting_user=user, user=user)
    given = {
        "id": key.key_id,
        "prefix": f"nac_{key.key_id}_",
        "prefix_with_ellipsis": key.display_prefix,
    }[form]
    # when the operator revokes it
    out, _ = _run("revoke", given)
    # then it is refused from the next request, and the audit log says the CLI did it
    assert "Revoked" in out
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api_get(full_key).status_code == 401
    assert AuditEvent.objects.get(action="apikey.revoked").actor is None


def test_revoke_refusals(user):
    # given a revoked key
    key, full_key = apikey_create(name="k", scopes=["profile:read"], acting_user=user, user=user)
    _run("revoke", key.key_id)
    # when it is revoked again, or an unknown or malformed id is given
    with pytest.raises(CommandError, match="already revoked"):
        _run("revoke", key.key_id)
    with pytest.raises(CommandError, match="No API key with that id") as unknown:
        _run("revoke", "0" * 12)
    with pytest.raises(CommandError, match="No API key with that id"):
        _run("revoke", "not-a-key")
    # then a whole key given by mistake is not echoed back
    with pytest.raises(CommandError) as pasted:
        _run("revoke", full_key)
    assert full_key not in str(pasted.value)
    assert full_key not in str(unknown.value)
