"""Who may become a student or a founder, and that every refusal leaves nothing behind."""

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.exceptions import ApplicationError
from portal.onboarding.models import StudentProfile, University
from portal.onboarding.selectors import university_for_email
from portal.onboarding.services import startup_onboard, student_onboard
from portal.organisations.models import Organisation
from tests.factories import (
    CohortFactory,
    MembershipFactory,
    StudentProfileFactory,
    UniversityFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
NEXT_YEAR = timezone.localdate().year + 1


@pytest.fixture
def nust():
    """The seeded university when the data migration's rows are there, else a fresh one."""
    seeded = University.objects.filter(domains__domain="nust.edu.pk").first()
    return seeded or UniversityFactory(name="NUST", domains=["nust.edu.pk"])


@pytest.mark.parametrize(
    ("email", "matches"),
    [
        ("ali@nust.edu.pk", True),
        ("ali@seecs.nust.edu.pk", True),
        ("ALI@NUST.EDU.PK", True),
        ("ali@notnust.edu.pk", False),
        ("ali@nust.edu.pk.evil.com", False),
        ("ali@edu.pk", False),
    ],
)
def test_university_domain_matching(nust, email, matches):
    assert (university_for_email(email=email) == nust) is matches


def test_an_inactive_university_admits_nobody(nust):
    nust.is_active = False
    nust.save()
    assert university_for_email(email="ali@nust.edu.pk") is None


def test_student_with_an_allowed_domain_is_admitted(nust):
    user = UserFactory(email="sara@seecs.nust.edu.pk")
    profile = student_onboard(user=user, programme=" BS AI ", expected_graduation_year=NEXT_YEAR)
    assert profile.university == nust
    assert profile.route == StudentProfile.Route.EMAIL_DOMAIN
    assert profile.programme == "BS AI"
    assert AuditEvent.objects.filter(action="student.onboarded", actor=user).exists()


def test_a_disallowed_domain_is_refused_with_a_clear_message(nust):
    user = UserFactory(email="sara@gmail.com")
    with pytest.raises(ApplicationError) as excinfo:
        student_onboard(user=user, programme="BS AI", expected_graduation_year=NEXT_YEAR)
    assert "gmail.com" in excinfo.value.message
    assert "cohort invite code" in excinfo.value.message
    assert not StudentProfile.objects.exists()


def test_a_cohort_code_admits_any_verified_address():
    cohort = CohortFactory(capacity=2)
    user = UserFactory(email="sara@gmail.com")
    profile = student_onboard(
        user=user,
        programme="Bootcamp",
        expected_graduation_year=NEXT_YEAR,
        cohort_code=f"  {cohort.code.lower()} ",
        institution="Karachi Coding School",
    )
    assert profile.cohort == cohort
    assert profile.institution_name == "Karachi Coding School"


def test_a_full_cohort_is_refused():
    cohort = CohortFactory(capacity=1)
    StudentProfileFactory(cohort=cohort)
    user = UserFactory()
    with pytest.raises(ApplicationError, match="full"):
        student_onboard(
            user=user, programme="X", expected_graduation_year=NEXT_YEAR, cohort_code=cohort.code
        )
    assert not StudentProfile.objects.filter(user=user).exists()


def test_an_expired_cohort_is_refused():
    cohort = CohortFactory(expires_at=timezone.now() - dt.timedelta(minutes=1))
    user = UserFactory()
    with pytest.raises(ApplicationError, match="expired"):
        student_onboard(
            user=user, programme="X", expected_graduation_year=NEXT_YEAR, cohort_code=cohort.code
        )
    assert not StudentProfile.objects.exists()


def test_an_unknown_cohort_code_is_refused():
    with pytest.raises(ApplicationError, match="not valid") as excinfo:
        student_onboard(
            user=UserFactory(),
            programme="X",
            expected_graduation_year=NEXT_YEAR,
            cohort_code="NOPE",
        )
    assert excinfo.value.field == "cohort_code"


def test_an_unverified_address_cannot_onboard(nust):
    user = UserFactory(email="sara@nust.edu.pk", verified=False)
    with pytest.raises(ApplicationError, match="Verify your e-mail"):
        student_onboard(user=user, programme="BS AI", expected_graduation_year=NEXT_YEAR)
    with pytest.raises(ApplicationError, match="Verify your e-mail"):
        startup_onboard(
            user=user,
            legal_name="X",
            secp_registration_number="0101010",
            sector="other",
            city="Lahore",
            province="punjab",
            team_size="1",
            data_sensitivity="public",
        )
    assert not StudentProfile.objects.exists()
    assert not Organisation.objects.exists()


def test_onboarding_happens_once(nust):
    member = MembershipFactory().user
    with pytest.raises(ApplicationError, match="already completed"):
        student_onboard(user=member, programme="X", expected_graduation_year=NEXT_YEAR)
    student = StudentProfileFactory().user
    with pytest.raises(ApplicationError, match="already completed"):
        student_onboard(user=student, programme="X", expected_graduation_year=NEXT_YEAR)


@pytest.mark.parametrize("year", [1999, timezone.localdate().year + 20])
def test_an_implausible_graduation_year_is_refused(nust, year):
    with pytest.raises(ApplicationError) as excinfo:
        student_onboard(
            user=UserFactory(email="a@nust.edu.pk"), programme="X", expected_graduation_year=year
        )
    assert excinfo.value.field == "expected_graduation_year"


@pytest.mark.django_db(transaction=True)
def test_the_last_seat_of_a_cohort_goes_to_exactly_one_student():
    """Eight students race for three seats on real database transactions."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL; `make test` runs this on PostgreSQL")
    cohort = CohortFactory(capacity=3)
    users = [UserFactory() for _ in range(8)]
    barrier = threading.Barrier(len(users))
    outcomes: list[str] = []

    def enrol(user):
        barrier.wait()
        try:
            student_onboard(
                user=user,
                programme="X",
                expected_graduation_year=NEXT_YEAR,
                cohort_code=cohort.code,
            )
            outcomes.append("in")
        except ApplicationError:
            outcomes.append("full")
        finally:
            connection.close()  # this thread's own connection; else the test database stays busy

    threads = [threading.Thread(target=enrol, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["full"] * 5 + ["in"] * 3
    assert StudentProfile.objects.filter(cohort=cohort).count() == 3
