"""Sign-up, verification and sign-in through allauth, as the portal configures it."""

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.users.models import HUB_USERNAME_REGEX, User, hub_username_generate
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
SIGNUP = {
    "name": "Zainab Qureshi",
    "email": "Zainab@Example.PK",
    "password1": "a long enough passphrase",
    "password2": "a long enough passphrase",
}


def _confirmation_path(message) -> str:
    return re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+/)", message.body).group(1)


def test_signup_creates_an_unverified_user_with_a_hub_username(client):
    response = client.post(reverse("account_signup"), SIGNUP)
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    user = User.objects.get()
    assert user.email == "zainab@example.pk"
    assert user.name == "Zainab Qureshi"
    assert re.fullmatch(HUB_USERNAME_REGEX, user.hub_username)
    assert user.hub_username.startswith("zainab-")
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1
    # mandatory verification: no session yet
    assert "_auth_user_id" not in client.session


def test_sign_in_is_refused_until_the_address_is_verified_then_onboarding(client):
    client.post(reverse("account_signup"), SIGNUP)
    response = client.post(
        reverse("account_login"), {"login": "zainab@example.pk", "password": SIGNUP["password1"]}
    )
    assert response["Location"] == reverse("account_email_verification_sent")
    assert "_auth_user_id" not in client.session
    # when the link in the e-mail is opened and confirmed
    path = _confirmation_path(mail.outbox[-1])
    assert client.get(path).status_code == 200  # shows a Confirm button, nothing changes on GET
    assert not EmailAddress.objects.get().verified
    response = client.post(path)
    # then the address is verified and the person lands in onboarding, signed in
    assert EmailAddress.objects.get().verified
    assert response["Location"] == reverse("onboarding:start")
    assert client.get(reverse("onboarding:start")).status_code == 200


def test_a_duplicate_address_in_other_case_is_refused(client):
    UserFactory(email="zainab@example.pk")
    client.post(reverse("account_signup"), SIGNUP)
    # allauth prevents enumeration: it pretends success but creates nobody and mails the owner
    assert User.objects.filter(email__iexact="zainab@example.pk").count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "not-an-email"), ("password1", "short"), ("password2", "mismatch!"), ("name", "")],
)
def test_bad_signup_input_creates_nobody(client, field, value):
    response = client.post(reverse("account_signup"), {**SIGNUP, field: value})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert not User.objects.exists()
    assert mail.outbox == []


def test_hub_usernames_are_unique_and_lowercase_for_the_same_local_part():
    names = {hub_username_generate(email="Ali.Khan+gpu@Example.pk") for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(HUB_USERNAME_REGEX, n) and n.startswith("ali-khan-gpu-") for n in names)
    assert re.fullmatch(HUB_USERNAME_REGEX, hub_username_generate(email="123@example.pk"))
    assert re.fullmatch(HUB_USERNAME_REGEX, hub_username_generate(email="___@example.pk"))


def test_hub_username_survives_an_email_change():
    user = UserFactory(email="old@example.pk")
    before = user.hub_username
    user.email = "new@example.pk"
    user.save()
    user.refresh_from_db()
    assert user.hub_username == before


def test_sign_in_and_failed_sign_in_are_audited(client):
    user = UserFactory(email="amna@example.pk")
    client.post(reverse("account_login"), {"login": "amna@example.pk", "password": "wrong"})
    failed = AuditEvent.objects.get(action="auth.sign_in_failed")
    assert failed.data == {"email": "amna@example.pk"}
    assert failed.ip == "127.0.0.1"
    assert "wrong" not in str(failed.data)
    client.post(reverse("account_login"), {"login": "amna@example.pk", "password": PASSWORD})
    assert AuditEvent.objects.filter(action="auth.signed_in", actor=user).exists()


def test_repeated_failed_sign_ins_lock_the_account_briefly_on_the_real_cache(client):
    UserFactory(email="target@example.pk")
    for i in range(5):
        client.post(reverse("account_login"), {"login": "target@example.pk", "password": f"x{i}"})
    # allauth allows 5 failures per 5 minutes per account; then even the right password waits
    response = client.post(
        reverse("account_login"), {"login": "target@example.pk", "password": PASSWORD}
    )
    assert "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_email_change_keeps_the_old_address_until_the_new_one_is_verified(client):
    user = UserFactory(email="before@example.pk")
    client.force_login(user)
    # allauth asks for the password again before an address change
    client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    client.post(reverse("account_email"), {"action_add": "", "email": "after@example.pk"})
    user.refresh_from_db()
    assert user.email == "before@example.pk"
    pending = EmailAddress.objects.get(email="after@example.pk")
    assert not pending.verified
    client.post(_confirmation_path(mail.outbox[-1]))
    user.refresh_from_db()
    assert user.email == "after@example.pk"
    assert list(EmailAddress.objects.filter(user=user).values_list("email", flat=True)) == [
        "after@example.pk"
    ]


def test_password_reset_mails_a_link_only_to_the_owner_of_the_address(client):
    UserFactory(email="forgetful@example.pk")
    client.post(reverse("account_reset_password"), {"email": "forgetful@example.pk"})
    client.post(reverse("account_reset_password"), {"email": "nobody@example.pk"})
    to_owner, to_stranger = mail.outbox
    assert to_owner.to == ["forgetful@example.pk"]
    assert "/accounts/password/reset/key/" in to_owner.body
    # enumeration-safe: the unknown address is told there is no account, with no link
    assert to_stranger.to == ["nobody@example.pk"]
    assert "/accounts/password/reset/key/" not in to_stranger.body


def test_mfa_changes_and_failures_are_audited(client, programme_manager):
    from tests.conftest import totp_code_now

    client.post(reverse("account_login"), {"login": programme_manager.email, "password": PASSWORD})
    client.post(reverse("mfa_authenticate"), {"code": "000000"})
    client.post(reverse("mfa_authenticate"), {"code": totp_code_now()})
    actions = list(
        AuditEvent.objects.filter(actor=programme_manager).values_list("action", flat=True)
    )
    assert "mfa.failed" in actions
    assert "auth.signed_in" in actions
