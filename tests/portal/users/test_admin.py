"""The admin is reached through allauth sign-in and requires MFA, like the programme pages."""

import pytest
from django.urls import reverse

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_anonymous_is_sent_to_allauth_sign_in_not_the_admin_login(client):
    response = client.get(reverse("admin:index"), follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("account_login"))


def test_the_admin_login_form_cannot_be_used_to_guess_passwords(client):
    UserFactory(email="staff@example.pk", is_staff=True)
    response = client.post(
        reverse("admin:login"), {"username": "staff@example.pk", "password": "guess"}
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_staff_without_mfa_must_set_it_up(client, programme_manager_without_mfa):
    client.force_login(programme_manager_without_mfa)
    response = client.get(reverse("admin:index"), follow=True)
    # (allauth then asks for the password again before showing the TOTP set-up)
    assert (reverse("mfa_activate_totp"), 302) in response.redirect_chain


def test_staff_with_mfa_reach_the_admin(client, programme_manager):
    client.force_login(programme_manager)
    assert client.get(reverse("admin:index")).status_code == 200


def test_a_non_staff_user_is_forbidden(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:index"), follow=True)
    assert response.status_code == 403


@pytest.mark.parametrize(
    "model", ["ledgertransaction", "ledgerentry", "creditaccount", "creditgrant"]
)
def test_the_ledger_is_read_only_in_the_admin(client, programme_manager, model):
    client.force_login(programme_manager)
    programme_manager.is_superuser = True
    programme_manager.save()
    assert client.get(reverse(f"admin:credits_{model}_changelist")).status_code == 200
    assert client.get(reverse(f"admin:credits_{model}_add")).status_code == 403
