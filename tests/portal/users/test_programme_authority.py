"""Programme-manager authority is the session's, not the account's: a programme manager whose
account has TOTP but whose session did not use it acts as nobody in particular until it does.
The attacker here holds a programme manager's password and nothing else."""

import pytest
from django.test import Client
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.credits.models import ApplicationEvent, CreditApplication
from portal.organisations.models import Role
from portal.users.selectors import session_passed_mfa
from tests.conftest import record_sign_in, sign_in_with_password_only, totp_code_now
from tests.factories import PASSWORD, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db
OVERVIEW = "dashboard:overview"


def test_a_password_alone_never_signs_a_programme_manager_in(client, programme_manager):
    # given the attacker knows the password of a programme manager who has TOTP
    # when they sign in with it and go straight for the programme pages
    response = client.post(
        reverse("account_login"), {"login": programme_manager.email, "password": PASSWORD}
    )
    assert response["Location"] == reverse("mfa_authenticate")
    response = client.get(reverse(OVERVIEW))

    # then they are not signed in at all: allauth waits for the code
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_a_sign_in_with_the_code_carries_programme_authority(client, programme_manager):
    # given a programme manager signing in with their password and their code
    client.post(reverse("account_login"), {"login": programme_manager.email, "password": PASSWORD})
    client.post(reverse("mfa_authenticate"), {"code": totp_code_now()})

    # when they open the programme pages
    response = client.get(reverse(OVERVIEW))

    # then they are in: allauth recorded the second factor in this session
    assert response.status_code == 200
    assert session_passed_mfa(session=client.session, user=programme_manager)


def test_a_session_without_the_code_is_sent_to_enter_one_and_then_let_in(client, programme_manager):
    # given a session of a programme manager with TOTP that never used it (opened before TOTP
    # was set up, say)
    sign_in_with_password_only(client, programme_manager)
    page = reverse(OVERVIEW)

    # when they open a programme page, they are asked for a code, not let in
    response = client.get(page)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("mfa_reauthenticate"))

    # then entering it in that session lets them in
    response = client.post(response["Location"], {"code": totp_code_now()})
    assert response.status_code == 302
    assert response["Location"] == page
    assert client.get(page).status_code == 200


def test_a_wrong_code_gives_no_authority(client, programme_manager):
    sign_in_with_password_only(client, programme_manager)
    location = client.get(reverse(OVERVIEW))["Location"]
    client.post(location, {"code": "000000"})
    assert client.get(reverse(OVERVIEW)).status_code == 302
    assert not session_passed_mfa(session=client.session, user=programme_manager)


def test_records_of_the_second_factor_count_only_for_the_person_who_made_them(
    programme_manager,
):
    # given a session whose records say a second factor was passed, by someone else
    other = UserFactory()
    client = Client()
    client.force_login(programme_manager)
    session = client.session
    record_sign_in(session, other, second_factor=True)

    # then they give the programme manager nothing
    assert not session_passed_mfa(session=session, user=programme_manager)
    assert session_passed_mfa(session=session, user=other)


def _submitted_application(organisation, owner) -> CreditApplication:
    return CreditApplication.objects.create(
        organisation=organisation,
        created_by=owner,
        title="Urdu OCR",
        summary="Train an OCR model on scanned newspapers.",
        sector="language",
        requested_gpu_hours=100,
        duration_months=3,
        data_sensitivity="public",
        state="submitted",
    )


@pytest.mark.parametrize("passed_mfa", [False, True])
def test_a_reviewers_comment_needs_the_second_factor(client, programme_manager, passed_mfa):
    # given a programme manager who is also an admin of an organisation with an application
    # (so the applicant's page is open to them), signed in with or without the code
    membership = MembershipFactory(user=programme_manager, role=Role.ADMIN)
    owner = MembershipFactory(organisation=membership.organisation, role=Role.OWNER).user
    application = _submitted_application(membership.organisation, owner)
    if passed_mfa:
        client.force_login(programme_manager)
    else:
        sign_in_with_password_only(client, programme_manager)
    audited = AuditEvent.objects.filter(action="application.commented").count()

    # when they write in the application's thread, where their message counts as a reviewer's
    url = reverse(
        "credits:application_action",
        kwargs={
            "slug": membership.organisation.slug,
            "public_id": application.public_id,
            "action": "comment",
        },
    )
    client.post(url, {"message": "Approved soon, promise."})

    # then only a session that passed MFA speaks as a reviewer; without it nothing is written
    events = ApplicationEvent.objects.filter(application=application)
    commented = AuditEvent.objects.filter(action="application.commented")
    if passed_mfa:
        assert events.count() == 1
        assert commented.get(actor=programme_manager).data == {"reviewer": True}
    else:
        assert not events.exists()
        assert commented.count() == audited
