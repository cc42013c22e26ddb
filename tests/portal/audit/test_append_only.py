"""The audit log can be added to, never rewritten: in code and in the database itself."""

import pytest
from django.db import DatabaseError, connection, transaction

from portal.audit.models import AuditEvent
from portal.audit.services import audit_record
from portal.core.models import AppendOnlyError

pytestmark = pytest.mark.django_db


def test_code_cannot_change_or_delete_an_event(user):
    event = audit_record(actor=user, action="auth.signed_in", target=user, ip="10.0.0.1")
    event.action = "auth.nothing_happened"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.get().action == "auth.signed_in"


def test_a_new_object_with_a_stored_rows_key_cannot_overwrite_it(user):
    event = audit_record(actor=user, action="auth.signed_in", target=user)
    forged = AuditEvent(pk=event.pk, action="auth.signed_out")
    with pytest.raises(AppendOnlyError):
        forged.save()
    assert AuditEvent.objects.get().action == "auth.signed_in"


def test_the_database_refuses_an_update_even_from_raw_sql(user):
    audit_record(actor=user, action="auth.signed_in", target=user)
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'forged'")
    assert AuditEvent.objects.get().action == "auth.signed_in"


def test_queryset_update_is_refused_by_the_database(user):
    audit_record(actor=user, action="auth.signed_in", target=user)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.update(action="forged")
    assert AuditEvent.objects.get().action == "auth.signed_in"


def test_postgresql_also_refuses_delete(user):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps DELETE for the test flush; `make test` runs this on PostgreSQL")
    audit_record(actor=user, action="auth.signed_in", target=user)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1


def test_the_record_keeps_a_snapshot_of_who_and_what(user):
    event = audit_record(actor=user, action="auth.signed_in", target=user, data={"k": 1})
    assert event.actor_email == user.email
    assert event.target_type == "users.user"
    assert event.target_id == str(user.pk)
    assert event.target_repr == user.email
