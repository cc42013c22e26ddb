"""factory_boy factories for the portal's models."""

import datetime as dt

import factory
from allauth.account.models import EmailAddress
from django.utils import timezone

from portal.onboarding.models import Cohort, StudentProfile, University, UniversityDomain
from portal.organisations.models import Invitation, Membership, Organisation, Role
from portal.users.models import User, hub_username_generate

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    """A person with a verified primary e-mail address (verified=False: an unverified one)."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"person{n}@example.pk")
    name = factory.Faker("name")
    hub_username = factory.LazyAttribute(lambda o: hub_username_generate(email=o.email))
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def verified(self, create, extracted, **kwargs):
        if create:
            EmailAddress.objects.create(
                user=self, email=self.email, primary=True, verified=extracted is not False
            )


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation

    legal_name = factory.Sequence(lambda n: f"Startup {n} (Private) Limited")
    slug = factory.Sequence(lambda n: f"startup-{n}")
    secp_registration_number = factory.Sequence(lambda n: f"{1000000 + n:07d}")
    sector = "software"
    city = "Lahore"
    province = "punjab"
    team_size = "2-5"
    data_sensitivity = "internal"
    created_by = factory.SubFactory(UserFactory)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    organisation = factory.SubFactory(OrganisationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class InvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invitation

    organisation = factory.SubFactory(OrganisationFactory)
    email = factory.Sequence(lambda n: f"invitee{n}@example.pk")
    role = Role.MEMBER
    invited_by = factory.SubFactory(UserFactory)
    expires_at = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(days=7))


class UniversityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = University
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"University {n}")

    @factory.post_generation
    def domains(self, create, extracted, **kwargs):
        if create:
            for domain in extracted or []:
                UniversityDomain.objects.create(university=self, domain=domain)


class CohortFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cohort

    name = factory.Sequence(lambda n: f"Cohort {n}")
    capacity = 10
    expires_at = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(days=30))
    created_by = factory.SubFactory(UserFactory)


class StudentProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StudentProfile

    user = factory.SubFactory(UserFactory)
    route = StudentProfile.Route.COHORT
    cohort = factory.SubFactory(CohortFactory)
    institution = "Somewhere College"
    programme = "BS Computer Science"
    expected_graduation_year = factory.LazyFunction(lambda: timezone.localdate().year + 1)
