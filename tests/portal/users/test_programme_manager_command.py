import pytest
from django.core.management import CommandError, call_command

from portal.audit.models import AuditEvent
from portal.users.models import User
from portal.users.selectors import user_is_programme_manager
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_add_and_remove_the_programme_manager_role():
    person = UserFactory(email="officer@ministry.gov.pk")
    call_command("programme_manager", "add", "Officer@Ministry.gov.pk")
    granted = User.objects.get(pk=person.pk)
    assert granted.is_staff
    assert user_is_programme_manager(user=granted)
    call_command("programme_manager", "remove", "officer@ministry.gov.pk")
    revoked = User.objects.get(pk=person.pk)
    assert not revoked.is_staff
    assert not user_is_programme_manager(user=revoked)
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["programme_manager.granted", "programme_manager.revoked"]


def test_an_unknown_address_is_a_clear_error():
    with pytest.raises(CommandError, match="No user with the e-mail address"):
        call_command("programme_manager", "add", "ghost@example.pk")
