"""Who sees which model: everyone's models, one organisation's (its members only, never another
organisation's), one cohort's (its students only); a model out of the catalogue, no one."""

import pytest

from inference.catalogue.models import ServedModel
from tests.factories import UserFactory

from .conftest import served_model

pytestmark = pytest.mark.django_db


def names(user) -> set[str]:
    return set(ServedModel.objects.visible_to_person(user=user).values_list("name", flat=True))


def test_each_person_sees_what_is_offered_to_them(acme, rival, cohort_student):
    # given
    served_model(name="for-all")
    served_model(name="for-acme", visibility="organisation", organisation=acme["organisation"])
    served_model(name="for-rival", visibility="organisation", organisation=rival["organisation"])
    served_model(name="for-cohort", visibility="cohort", cohort=cohort_student["cohort"])
    served_model(name="withdrawn", is_active=False)

    # then
    for person in ("owner", "admin", "member"):
        assert names(acme[person]) == {"for-all", "for-acme"}
    assert names(rival["owner"]) == {"for-all", "for-rival"}
    assert names(cohort_student["student"]) == {"for-all", "for-cohort"}
    assert names(UserFactory()) == {"for-all"}


def test_no_one_signed_out_sees_anything():
    from django.contrib.auth.models import AnonymousUser

    served_model(name="for-all")
    assert names(AnonymousUser()) == set()


def test_an_organisation_with_many_members_lists_its_model_once(acme):
    served_model(name="for-acme", visibility="organisation", organisation=acme["organisation"])
    assert list(
        ServedModel.objects.visible_to_person(user=acme["owner"]).values_list("name", flat=True)
    ) == ["for-acme"]
