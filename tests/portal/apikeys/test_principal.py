"""Which organisation an API request acts for (issue 14 §5): one function,
`organisation_acting_for`, for the credit and sandbox APIs alike. Naming an organisation the
caller is not in is a 404, as if it did not exist, for a person and for a service key."""

import uuid
from types import SimpleNamespace

import pytest
from django.http import Http404

from portal.apikeys.principal import organisation_acting_for
from portal.apikeys.services import apikey_create
from portal.core.exceptions import ApplicationError
from portal.credits.models import CreditApplication
from portal.organisations.models import Role
from tests.factories import MembershipFactory, OrganisationFactory
from tests.portal.api.conftest import API, APPLICATION, assert_error, key_client

pytestmark = pytest.mark.django_db


def _person_asking(user, **query):
    return SimpleNamespace(user=user, auth=None, query_params=query)


def _service_key_asking(own, **query):
    service = SimpleNamespace(is_service_account=True, organisation=own)
    return SimpleNamespace(user=service, auth=None, query_params=query)


def test_a_person_acts_for_the_organisation_they_name(organisation, owner):
    other = MembershipFactory(user=owner).organisation

    request = _person_asking(owner, organisation=str(other.public_id))

    assert organisation_acting_for(request) == other
    assert organisation_acting_for(request, organisation.public_id) == organisation  # body wins


@pytest.mark.parametrize("named", ["query", "body"])
def test_naming_an_organisation_one_is_not_in_is_refused_as_not_found(owner, named):
    """The hostile case: a real organisation, someone else's."""
    theirs = OrganisationFactory()
    query = {"organisation": str(theirs.public_id)} if named == "query" else {}
    wanted = theirs.public_id if named == "body" else None

    for only_one_is_default in (True, False):
        with pytest.raises(Http404):
            organisation_acting_for(
                _person_asking(owner, **query), wanted, only_one_is_default=only_one_is_default
            )


def test_a_malformed_or_unknown_id_is_not_found_either(owner):
    for wanted in ("not-a-uuid", str(uuid.uuid4())):
        with pytest.raises(Http404):
            organisation_acting_for(_person_asking(owner, organisation=wanted))


def test_naming_none_a_person_acts_for_their_only_organisation_or_for_none(organisation, owner):
    loner = MembershipFactory().user
    loner.memberships.all().delete()

    assert organisation_acting_for(_person_asking(owner)) == organisation
    assert organisation_acting_for(_person_asking(owner), only_one_is_default=False) is None
    assert organisation_acting_for(_person_asking(loner)) is None


def test_a_person_in_several_organisations_is_asked_which(owner):
    MembershipFactory(user=owner)

    with pytest.raises(ApplicationError) as refused:
        organisation_acting_for(_person_asking(owner))

    assert refused.value.field == "organisation"
    assert organisation_acting_for(_person_asking(owner), only_one_is_default=False) is None


def test_a_service_key_acts_for_its_own_organisation_and_no_other(organisation):
    other = OrganisationFactory()

    assert organisation_acting_for(_service_key_asking(organisation)) == organisation
    assert (
        organisation_acting_for(_service_key_asking(organisation), only_one_is_default=False)
        == organisation
    )
    with pytest.raises(Http404):
        organisation_acting_for(_service_key_asking(organisation), other.public_id)
    with pytest.raises(Http404):
        organisation_acting_for(
            _service_key_asking(organisation, organisation=str(other.public_id))
        )


def test_applying_for_someone_elses_organisation_through_the_api_is_404_and_creates_nothing(
    organisation, owner
):
    theirs = MembershipFactory(role=Role.OWNER).organisation
    _key, full_key = apikey_create(
        name="mine", scopes=["applications:write"], acting_user=owner, user=owner
    )

    response = key_client(full_key).post(
        f"{API}/credit-applications",
        {**APPLICATION, "organisation": str(theirs.public_id)},
        format="json",
    )

    assert_error(response, 404)
    assert not CreditApplication.objects.exists()
