"""Every action in the audit log is declared once, in `AuditAction`, with a label to read."""

import ast
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import translation

from portal.audit.actions import AuditAction
from portal.audit.models import AuditEvent
from portal.audit.services import audit_record

SOURCES = [Path(settings.BASE_DIR) / "portal", Path(settings.BASE_DIR) / "sandboxes"]


@pytest.mark.django_db
def test_an_undeclared_action_is_refused_and_nothing_is_recorded(user):
    with pytest.raises(ValueError, match="auth.nothing_happened"):
        audit_record(actor=user, action="auth.nothing_happened", target=user)
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_declared_action_is_stored_as_its_value(user):
    # given the member, or the value the database and the export already hold
    audit_record(actor=user, action=AuditAction.AUTH_SIGNED_IN, target=user)
    audit_record(actor=user, action="auth.signed_out", target=user)
    # then the column holds the plain strings, as before the enum
    assert sorted(AuditEvent.objects.values_list("action", flat=True)) == [
        "auth.signed_in",
        "auth.signed_out",
    ]


def _audit_calls():
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "audit_record":
                    yield path, node


def test_every_call_names_its_action_through_the_enum_not_a_string():
    # A literal (or an f-string) would be refused only when that code path runs; a member of
    # AuditAction is checked when the module is imported.
    literals = []
    calls = 0
    for path, call in _audit_calls():
        calls += 1
        for keyword in call.keywords:
            if keyword.arg == "action" and isinstance(keyword.value, ast.Constant | ast.JoinedStr):
                literals.append(f"{path.relative_to(settings.BASE_DIR)}:{call.lineno}")
    assert calls > 40  # the scan sees the code it is meant to see
    assert literals == []


def test_every_action_has_a_label_and_values_follow_one_shape():
    for action in AuditAction:
        area, _, event = action.value.partition(".")
        assert area, action.value
        assert event, action.value
        assert action.name == action.value.upper().replace(".", "_")
        assert str(action.label) != action.value


def test_labels_are_translated():
    with translation.override("en"):
        english = {action: str(action.label) for action in AuditAction}
    with translation.override("ur"):
        untranslated = [
            action.value for action in AuditAction if str(action.label) == english[action]
        ]
    assert untranslated == []


def test_an_action_no_longer_declared_reads_as_its_stored_value():
    assert AuditAction.label_of("thing.retired") == "thing.retired"
    assert AuditAction.label_of("auth.signed_in") == AuditAction.AUTH_SIGNED_IN.label
