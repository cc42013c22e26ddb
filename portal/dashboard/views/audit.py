"""The audit log, and its export as CSV."""

import datetime as dt
import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.selectors import audit_actions, audit_events_list
from portal.audit.services import audit_record, client_ip
from portal.core.spreadsheets import csv_response

from ..access import programme_manager_required
from ..forms.audit import AuditFilterForm
from ..listing import filtered_page

AUDIT_PAGE_SIZE = 50


def _given(filters: dict) -> dict:
    return {k: v for k, v in filters.items() if v}


def _audit_filters(request: HttpRequest) -> tuple[AuditFilterForm, dict]:
    form = AuditFilterForm(request.GET or None, actions=audit_actions())
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    return form, _given(filters)


@programme_manager_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None, actions=audit_actions())
    context, status = filtered_page(
        request,
        form,
        lambda filters: audit_events_list(**_given(filters)),
        AUDIT_PAGE_SIZE,
    )
    return render(request, "dashboard/audit.html", context, status=status)


AUDIT_CSV_HEADER = [
    "created_at",
    "actor_email",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "ip",
    "data",
]


def _audit_rows(events):
    yield AUDIT_CSV_HEADER
    for event in events.iterator(chunk_size=2000):
        yield [
            event.created_at.astimezone(dt.UTC).isoformat(),
            event.actor_email,
            event.action,
            event.target_type,
            event.target_id,
            event.target_repr,
            event.ip,
            json.dumps(event.data, ensure_ascii=False, sort_keys=True),
        ]


@programme_manager_required
def audit_export(request: HttpRequest) -> HttpResponse:
    """Every event the same filters match, newest first, streamed as CSV (times in UTC). The
    export is itself audited, with its filters."""
    form, filters = _audit_filters(request)
    if form.is_bound and form.errors:
        return HttpResponse(
            " ".join(str(e) for errors in form.errors.values() for e in errors),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    audit_record(
        actor=request.user,
        action=AuditAction.AUDIT_EXPORTED,
        ip=client_ip(request),
        data={k: v.isoformat() if isinstance(v, dt.date) else v for k, v in filters.items()},
    )
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    return csv_response(
        _audit_rows(audit_events_list(**filters)), filename=f"audit-{stamp}.csv", request=request
    )
