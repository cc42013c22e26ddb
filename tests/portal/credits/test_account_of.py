"""One way to read a credit account (issue 14 §5): `account_of`, by its organisation or by its
person; it opens nothing, so reading an account that was never opened gives None."""

import pytest

from portal.credits.models import CreditAccount
from portal.credits.selectors import account_of
from portal.credits.services.ledger import account_for_organisation, account_for_student
from tests.factories import OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_an_organisations_and_a_persons_account_are_found_by_their_holder():
    organisation, person = OrganisationFactory(), UserFactory()
    opened = account_for_organisation(organisation), account_for_student(person)

    assert (account_of(organisation=organisation), account_of(user=person)) == opened


def test_an_account_never_opened_is_none_and_reading_opens_none():
    assert account_of(organisation=OrganisationFactory()) is None
    assert account_of(user=UserFactory()) is None
    assert not CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM).exists()


@pytest.mark.parametrize("holders", [{}, "both"])
def test_it_takes_exactly_one_holder_never_a_system_account(holders):
    """Neither holder would match the system accounts (no organisation, no person)."""
    if holders == "both":
        holders = {"organisation": OrganisationFactory(), "user": UserFactory()}

    with pytest.raises(TypeError):
        account_of(**holders)
