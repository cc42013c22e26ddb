"""The audit log, and its export as CSV."""

import csv
import datetime as dt
import itertools
import json

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from portal.audit.selectors import audit_actions, audit_events_list
from portal.audit.services import audit_record, client_ip
from portal.core.spreadsheets import Echo, csv_cell

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
    writer = csv.writer(Echo())
    yield writer.writerow(AUDIT_CSV_HEADER)
    for event in events.iterator(chunk_size=2000):
        yield writer.writerow(
            [
                csv_cell(value)
                for value in (
                    event.created_at.astimezone(dt.UTC).isoformat(),
                    event.actor_email,
                    event.action,
                    event.target_type,
                    event.target_id,
                    event.target_repr,
                    event.ip,
                    json.dumps(event.data, ensure_ascii=False, sort_keys=True),
                )
            ]
        )


EXPORT_CHUNK_ROWS = 500


def _rows_chunk(rows) -> str:
    return "".join(itertools.islice(rows, EXPORT_CHUNK_ROWS))


async def _rows_async(rows):
    """The same rows for the ASGI server: Django would read a plain iterator into a list before
    sending a byte, so each chunk is read (from the database cursor) in the request's own sync
    thread and sent before the next is read."""
    while chunk := await sync_to_async(_rows_chunk)(rows):
        yield chunk


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
        action="audit.exported",
        ip=client_ip(request),
        data={k: v.isoformat() if isinstance(v, dt.date) else v for k, v in filters.items()},
    )
    rows = _audit_rows(audit_events_list(**filters))
    if isinstance(request, ASGIRequest):
        rows = _rows_async(rows)
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
