"""Programme-manager pages. Selectors read; services write; every page is behind the gate."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal.audit.selectors import audit_actions, audit_events_list
from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
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
from portal.credits.models import CreditAccount, CreditApplication, CreditGrant
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
from portal.onboarding.services import cohort_create
from sandboxes.gpus.models import GpuDevice
from sandboxes.metering.selectors import cluster_snapshot

from .access import programme_manager_required
from .forms import AuditFilterForm, CohortForm
from .selectors import programme_overview, recent_organisations, recent_students

AUDIT_PAGE_SIZE = 50


@programme_manager_required
def overview(request: HttpRequest) -> HttpResponse:
    context = {
        "overview": programme_overview(),
        "organisations": recent_organisations(),
        "students": recent_students(),
    }
    return render(request, "dashboard/overview.html", context)


@programme_manager_required
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None, actions=audit_actions())
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    events = audit_events_list(**{k: v for k, v in filters.items() if v})
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request,
        "dashboard/audit.html",
        {"form": form, "page": page, "query": query.urlencode()},
        status=status,
    )


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
            return redirect("dashboard:cohorts")
    listing = (
        Cohort.objects.select_related("university")
        .annotate(joined=Count("students"))
        .order_by("-created_at")
    )
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request, "dashboard/cohorts.html", {"form": form, "cohorts": listing}, status=status
    )


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
    form = QueueFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    queue = review_queue(
        states=filters.get("state") or None,
        sector=filters.get("sector") or "",
        min_days_waiting=filters.get("min_days_waiting"),
    )
    page = Paginator(queue, 50).get_page(request.GET.get("page"))
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request,
        "dashboard/applications.html",
        {"form": form, "page": page, "counts": review_queue_counts(), "now": timezone.now()},
        status=status,
    )


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
            application=app, acting_user=user, message=form.cleaned_data["message"]
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
    /ws/live/cluster/ (static/js/cluster.js)."""
    snapshot = cluster_snapshot()
    health = {value: str(label) for value, label in GpuDevice.Health.choices}
    for tile in snapshot["gpus"]:
        tile["health_label"] = health.get(tile["health"], tile["health"])
    live = {"ws_path": "/ws/live/cluster/", "text": {"free": _("Free"), "health": health}}
    return render(request, "dashboard/cluster.html", {"snapshot": snapshot, "live": live})
