"""Credit accounts: an account's page, an adjustment posted by hand, a grant revoked (from the
review and account pages, which send the page to come back to as `next`)."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.credits import services as credit_services
from portal.credits.forms import AdjustmentForm, ReasonForm
from portal.credits.models import CreditAccount, CreditGrant
from portal.credits.selectors import available_credit_seconds, grants_of, statement_months
from portal.credits.units import display_gpu_hours, gpu_hours_to_credit_seconds

from ..access import programme_manager_required


def _next_or(request: HttpRequest, default: str) -> str:
    """The form's `next` when it points inside this site, else the default (no open redirect)."""
    candidate = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


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
