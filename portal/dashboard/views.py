"""Programme-manager pages. Selectors read; services write; every page is behind the gate."""

import csv
import datetime as dt
import itertools
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal.audit.selectors import audit_actions, audit_events_list
from portal.audit.services import audit_record, client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.core.spreadsheets import Echo, csv_cell
from portal.credits import services as credit_services
from portal.credits.applications import (
    DECIDABLE_STATES,
    application_approve,
    application_comment,
    application_reject,
    application_request_changes,
    application_review_start,
)
from portal.credits.forms import (
    AdjustmentForm,
    ApproveForm,
    MessageForm,
    QueueFilterForm,
    ReasonForm,
    RejectForm,
)
from portal.credits.models import ApplicationState, CreditAccount, CreditApplication, CreditGrant
from portal.credits.selectors import (
    available_credit_seconds,
    grants_of,
    organisation_history,
    review_queue,
    review_queue_counts,
    statement_months,
)
from portal.credits.units import display_gpu_hours, gpu_hours_to_credit_seconds
from portal.onboarding.models import Cohort
from portal.onboarding.services import cohort_create, cohort_deactivate, cohort_update
from sandboxes.gpus.models import GpuDevice
from sandboxes.metering.selectors import cluster_snapshot

from .access import programme_manager_required
from .forms import AuditFilterForm, CohortEditForm, CohortForm
from .listing import filtered_page
from .selectors import (
    cluster_hourly,
    cluster_now,
    cohort_members,
    cohorts_list,
    device_history,
    holders_idle,
    ledger_month,
    programme_overview,
    queue_waiting_days,
    recent_organisations,
    recent_students,
    sandbox_queue,
    top_consumers,
)

AUDIT_PAGE_SIZE = 50
QUEUE_PAGE_SIZE = 50
COHORT_MEMBERS_PAGE_SIZE = 100
OVERVIEW_HOURS = 7 * 24
CLUSTER_HISTORY_DAYS = 14


@programme_manager_required
def overview(request: HttpRequest) -> HttpResponse:
    """The programme at a glance. A fixed number of queries whatever its size (charts drawn by
    static/js/overview.js from the embedded series)."""
    ledger = ledger_month(month=timezone.localdate().replace(day=1))
    hours = cluster_hourly(hours=OVERVIEW_HOURS)
    charts = {
        "utilisation": hours.series,
        "usage": ledger.daily_series(),
        "text": {
            "util_pct": _("Average utilisation"),
            "held_pct": _("GPU time held"),
            "idle_held_pct": _("Held but idle"),
            "gpu_hours": _("GPU-hours used"),
        },
    }
    context = {
        "overview": programme_overview(),
        "ledger": ledger,
        "queue": sandbox_queue(),
        "cluster": cluster_now(snapshot=cluster_snapshot()),
        "utilisation_days": hours.days,
        "charts": charts,
        "organisations": recent_organisations(),
        "students": recent_students(),
    }
    return render(request, "dashboard/overview.html", context)


# --- The audit log and its export ----------------------------------------------------------


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


# --- Cohorts --------------------------------------------------------------------------------


@programme_manager_required
def cohorts(request: HttpRequest) -> HttpResponse:
    form = CohortForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            cohort = cohort_create(
                **form.cleaned_data, acting_user=request.user, ip=client_ip(request)
            )
        except ApplicationError as error:
            add_service_error(form, error)
        else:
            messages.success(
                request,
                _("Cohort %(name)s created. Its invite code is %(code)s.")
                % {"name": cohort.name, "code": cohort.code},
            )
            return redirect("dashboard:cohort", public_id=cohort.public_id)
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request,
        "dashboard/cohorts.html",
        {"form": form, "cohorts": cohorts_list()},
        status=status,
    )


@programme_manager_required
def cohort_detail(request: HttpRequest, public_id) -> HttpResponse:
    """Who joined (with their usage this month), and the cohort's settings to change."""
    cohort = get_object_or_404(Cohort.objects.select_related("university"), public_id=public_id)
    if request.method == "POST":
        form = CohortEditForm(request.POST, cohort=cohort)
        if form.is_valid():
            try:
                cohort_update(
                    cohort=cohort,
                    **form.cleaned_data,
                    acting_user=request.user,
                    ip=client_ip(request),
                )
            except ApplicationError as error:
                add_service_error(form, error)
            else:
                messages.success(request, _("Cohort saved."))
                return redirect("dashboard:cohort", public_id=public_id)
    else:
        form = CohortEditForm(cohort=cohort)
    members = cohort_members(cohort=cohort)
    page = Paginator(members, COHORT_MEMBERS_PAGE_SIZE).get_page(request.GET.get("page"))
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request,
        "dashboard/cohort.html",
        {
            "cohort": cohort,
            "form": form,
            "page": page,
            "joined": page.paginator.count,
            "month": timezone.localdate().replace(day=1),
        },
        status=status,
    )


@programme_manager_required
@require_POST
def cohort_deactivate_view(request: HttpRequest, public_id) -> HttpResponse:
    cohort = get_object_or_404(Cohort, public_id=public_id)
    try:
        cohort_deactivate(cohort=cohort, acting_user=request.user, ip=client_ip(request))
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, _("The cohort's code is closed: no one else can join with it."))
    return redirect("dashboard:cohort", public_id=public_id)


# --- Credit applications: the review queue and the review page -----------------------------


def _next_or(request: HttpRequest, default: str) -> str:
    """The form's `next` when it points inside this site, else the default (no open redirect)."""
    candidate = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


@programme_manager_required
def applications_queue(request: HttpRequest) -> HttpResponse:
    """The review queue, oldest submission first, with the days each has waited and those past
    the service level (CREDITS_REVIEW_SLA_DAYS) flagged."""
    form = QueueFilterForm(request.GET or None)
    context, status = filtered_page(
        request,
        form,
        lambda filters: review_queue(
            states=filters.get("state") or None,
            sector=filters.get("sector") or "",
            min_days_waiting=filters.get("min_days_waiting"),
        ),
        QUEUE_PAGE_SIZE,
    )
    page, now = context["page"], timezone.now()
    page.object_list = queue_waiting_days(applications=page.object_list, now=now)
    labels = dict(ApplicationState.choices)
    counts = [(labels.get(state, state), n) for state, n in review_queue_counts().items()]
    context.update(counts=counts, now=now, sla_days=settings.CREDITS_REVIEW_SLA_DAYS)
    return render(request, "dashboard/applications.html", context, status=status)


def _review_context(application, **forms) -> dict:
    return {
        "application": application,
        "history": organisation_history(organisation=application.organisation),
        "events": application.events.select_related("author"),
        # Each form gets its own id prefix: three of them have a `message` field on one page.
        "approve_form": forms.get("approve")
        or ApproveForm.for_application(application, auto_id="approve_%s"),
        "changes_form": forms.get("changes") or MessageForm(auto_id="changes_%s"),
        "reject_form": forms.get("reject") or RejectForm(auto_id="reject_%s"),
        "comment_form": forms.get("comment") or MessageForm(auto_id="comment_%s"),
        "decidable": application.state in DECIDABLE_STATES,
    }


@programme_manager_required
def application_review(request: HttpRequest, public_id) -> HttpResponse:
    application = get_object_or_404(
        CreditApplication.objects.select_related("organisation", "created_by"),
        public_id=public_id,
    )
    return render(request, "dashboard/application_review.html", _review_context(application))


REVIEW_ACTIONS = {
    # action: (form class, context key, service call, success message)
    "review": (
        None,
        None,
        lambda app, user, ip, data: application_review_start(
            application=app, acting_user=user, ip=ip
        ),
        gettext_lazy("Review started."),
    ),
    "approve": (
        ApproveForm,
        "approve",
        lambda app, user, ip, form: application_approve(
            application=app,
            acting_user=user,
            gpu_hours=form.cleaned_data["gpu_hours"],
            expires_at=form.expires_at(),
            rate_pkr_per_gpu_hour=form.cleaned_data["rate_pkr_per_gpu_hour"],
            message=form.cleaned_data["message"],
            ip=ip,
        ),
        gettext_lazy("Approved: the credits are on the organisation's account."),
    ),
    "changes": (
        MessageForm,
        "changes",
        lambda app, user, ip, form: application_request_changes(
            application=app, acting_user=user, message=form.cleaned_data["message"], ip=ip
        ),
        gettext_lazy("Sent back to the applicant for changes."),
    ),
    "reject": (
        RejectForm,
        "reject",
        lambda app, user, ip, form: application_reject(
            application=app, acting_user=user, reason=form.cleaned_data["reason"], ip=ip
        ),
        gettext_lazy("Rejected."),
    ),
    "comment": (
        MessageForm,
        "comment",
        lambda app, user, ip, form: application_comment(
            application=app, acting_user=user, message=form.cleaned_data["message"], ip=ip
        ),
        gettext_lazy("Message added."),
    ),
}


@programme_manager_required
@require_POST
def application_review_action(request: HttpRequest, public_id, action: str) -> HttpResponse:
    application = get_object_or_404(CreditApplication, public_id=public_id)
    if action not in REVIEW_ACTIONS:
        raise Http404
    form_class, key, service, success = REVIEW_ACTIONS[action]
    form = form_class(request.POST, auto_id=f"{key}_%s") if form_class else None
    status = 400
    if form is None or form.is_valid():
        try:
            service(application, request.user, client_ip(request), form)
        except ApplicationError as error:
            if form is not None and error.field in form.fields:
                add_service_error(form, error)
            else:
                messages.error(request, error.message)
                return redirect("dashboard:application_review", public_id=public_id)
            status = {"permission_denied": 403, "wrong_state": 409}.get(error.code, 400)
        else:
            messages.success(request, success)
            return redirect("dashboard:application_review", public_id=public_id)
    application.refresh_from_db()
    context = _review_context(application, **({key: form} if key else {}))
    return render(request, "dashboard/application_review.html", context, status=status)


@programme_manager_required
@require_POST
def grant_revoke(request: HttpRequest, public_id) -> HttpResponse:
    grant = get_object_or_404(CreditGrant.objects.select_related("account"), public_id=public_id)
    form = ReasonForm(request.POST)
    try:
        if not form.is_valid():
            raise ApplicationError(_("Give a reason for the revocation."))
        revoked = credit_services.grant_revoke(
            grant=grant,
            reason=form.cleaned_data["reason"],
            acting_user=request.user,
            ip=client_ip(request),
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            _("%(hours)s GPU-hours revoked.") % {"hours": display_gpu_hours(revoked)},
        )
    return redirect(_next_or(request, "dashboard:applications"))


@programme_manager_required
@require_POST
def account_adjust(request: HttpRequest, public_id) -> HttpResponse:
    account = get_object_or_404(
        CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM), public_id=public_id
    )
    form = AdjustmentForm(request.POST)
    try:
        if not form.is_valid():
            raise ApplicationError(
                " ".join(str(e) for errors in form.errors.values() for e in errors)
            )
        credit_services.adjustment_post(
            account=account,
            credit_seconds=gpu_hours_to_credit_seconds(form.cleaned_data["gpu_hours"]),
            reason=form.cleaned_data["reason"],
            idempotency_key=f"adjustment:{form.cleaned_data['token']}",
            acting_user=request.user,
            ip=client_ip(request),
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, _("Adjustment posted."))
    return redirect(_next_or(request, "dashboard:applications"))


@programme_manager_required
def account_detail(request: HttpRequest, public_id) -> HttpResponse:
    account = get_object_or_404(
        CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM).select_related(
            "organisation", "user"
        ),
        public_id=public_id,
    )
    context = {
        "account": account,
        "available": available_credit_seconds(account=account),
        "grants": grants_of(account=account),
        "months": statement_months(account=account),
        "adjust_form": AdjustmentForm(),
    }
    return render(request, "dashboard/account.html", context)


@programme_manager_required
def cluster(request: HttpRequest) -> HttpResponse:
    """Every GPU as a tile, first painted from the latest samples, then live over
    /ws/live/cluster/ (static/js/cluster.js); below, the last days: per device per day, idle
    but allocated time per holder, and this month's top consumers (static/js/cluster-history.js
    draws the days)."""
    snapshot = cluster_snapshot()
    health = {value: str(label) for value, label in GpuDevice.Health.choices}
    for tile in snapshot["gpus"]:
        tile["health_label"] = health.get(tile["health"], tile["health"])
    live = {"ws_path": "/ws/live/cluster/", "text": {"free": _("Free"), "health": health}}
    now = timezone.now()
    history = device_history(days=CLUSTER_HISTORY_DAYS)
    context = {
        "snapshot": snapshot,
        "live": live,
        "history": history,
        "history_chart": {
            "series": history.series,
            "text": {
                "held_hours": _("GPU-hours held"),
                "idle_held_hours": _("of which idle"),
            },
        },
        # Over the same days as the devices' table, so the holders' idle hours add up to it.
        "hoarding": holders_idle(start=history.start, end=now, now=now),
        "consumers": top_consumers(month=timezone.localdate().replace(day=1)),
        "history_days": CLUSTER_HISTORY_DAYS,
        "idle_threshold_pct": 5,
    }
    return render(request, "dashboard/cluster.html", context)
