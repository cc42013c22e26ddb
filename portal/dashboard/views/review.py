"""Credit applications: the review queue, the review page and its actions."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.credits.forms import ApproveForm, MessageForm, QueueFilterForm, RejectForm
from portal.credits.models import ApplicationState, CreditApplication
from portal.credits.selectors import organisation_history, review_queue, review_queue_counts
from portal.credits.services.applications import (
    DECIDABLE_STATES,
    application_approve,
    application_comment,
    application_reject,
    application_request_changes,
    application_review_start,
)

from ..access import programme_manager_required
from ..listing import filtered_page
from ..selectors.review import queue_waiting_days

QUEUE_PAGE_SIZE = 50


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
