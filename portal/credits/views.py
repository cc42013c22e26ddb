"""Applicant pages (credits, applications) and statements. Thin: forms in, services do the work."""

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.core.forms import add_service_error
from portal.core.spreadsheets import csv_response
from portal.organisations.selectors import membership_get
from portal.organisations.views import organisation_or_404
from portal.users.selectors import (
    PROGRAMME_MFA_REQUIRED,
    programme_authority,
    user_is_programme_manager,
)

from .forms import ApplicationForm, MessageForm
from .models import CreditApplication
from .selectors import (
    account_of,
    account_visible_to,
    available_credit_seconds,
    grants_of,
    statement_for,
    statement_months,
    warnings_open,
)
from .services import applications as workflow
from .units import display_gpu_hours, display_pkr, month_parse


def _application(organisation, public_id) -> CreditApplication:
    return get_object_or_404(
        CreditApplication.objects.select_related("organisation", "created_by"),
        organisation=organisation,
        public_id=public_id,
    )


def application_url(application: CreditApplication) -> str:
    return reverse(
        "credits:application",
        kwargs={"slug": application.organisation.slug, "public_id": application.public_id},
    )


@login_required
def organisation_credits(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    account = account_of(organisation=organisation)
    context = {
        "organisation": organisation,
        "membership": membership_get(organisation=organisation, user=request.user),
        "account": account,
        "available": available_credit_seconds(account=account) if account else 0,
        "grants": grants_of(account=account) if account else [],
        "warnings": warnings_open(account=account) if account else [],
        "applications": organisation.credit_applications.order_by("-created_at"),
        "months": statement_months(account=account) if account else [],
    }
    return render(request, "credits/organisation.html", context)


@login_required
def application_new(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    form = ApplicationForm(request.POST or None, organisation=organisation)
    if request.method == "POST" and form.is_valid():
        details = dict(form.cleaned_data)
        team = details.pop("team_members")
        try:
            application = workflow.application_create(
                organisation=organisation, acting_user=request.user, team_members=team, **details
            )
        except PermissionDenied as error:
            messages.error(request, error.message)
            return redirect("credits:organisation", slug=slug)
        except ApplicationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, _("Draft saved. Submit it when it is ready."))
            return redirect(application_url(application))
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request,
        "credits/application_form.html",
        {"organisation": organisation, "form": form},
        status=status,
    )


@login_required
def application_detail(request: HttpRequest, slug: str, public_id) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    application = _application(organisation, public_id)
    membership = membership_get(organisation=organisation, user=request.user)
    editable = application.state in workflow.EDITABLE_STATES and membership.can_manage_members
    form = None
    if editable:
        form = ApplicationForm(
            request.POST or None, instance=application, organisation=organisation
        )
        if request.method == "POST" and form.is_valid():
            details = dict(form.cleaned_data)
            team = details.pop("team_members")
            try:
                workflow.application_update(
                    application=application,
                    acting_user=request.user,
                    team_members=team,
                    **details,
                )
            except ApplicationError as error:
                add_service_error(form, error)
            else:
                messages.success(request, _("Changes saved."))
                return redirect(application_url(application))
    context = {
        "organisation": organisation,
        "application": application,
        "membership": membership,
        "form": form,
        "events": application.events.select_related("author"),
        "comment_form": MessageForm(),
        "grant": getattr(application, "grant", None),
    }
    status = 400 if form is not None and form.is_bound and form.errors else 200
    return render(request, "credits/application_detail.html", context, status=status)


APPLICANT_ACTIONS = {
    "submit": (
        workflow.application_submit,
        gettext_lazy("Submitted. A programme manager will review it."),
    ),
    "withdraw": (workflow.application_withdraw, gettext_lazy("The application was withdrawn.")),
}


@login_required
@require_POST
def application_action(request: HttpRequest, slug: str, public_id, action: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    application = _application(organisation, public_id)
    try:
        if action == "comment":
            # A programme manager's message counts as a reviewer's (and is mailed to the
            # applicants as one): it needs their authority, a session that passed MFA.
            if user_is_programme_manager(user=request.user) and not programme_authority(request):
                raise ApplicationError(str(PROGRAMME_MFA_REQUIRED))
            form = MessageForm(request.POST)
            if not form.is_valid():
                raise ApplicationError(_("Write a message."))
            workflow.application_comment(
                application=application,
                acting_user=request.user,
                message=form.cleaned_data["message"],
            )
            success = _("Message added.")
        elif action in APPLICANT_ACTIONS:
            service, success = APPLICANT_ACTIONS[action]
            service(application=application, acting_user=request.user, ip=client_ip(request))
        else:
            raise Http404
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, success)
    return redirect(application_url(application))


def _month(value: str) -> dt.date:
    month = month_parse(value)
    if month is None:
        raise Http404
    return month


def _statement_account(request: HttpRequest, public_id):
    """The account whose statement is asked for, when this request may read it. Someone
    else's needs programme-manager authority: a programme manager whose session has not
    passed MFA is told so (403); anyone else gets 404."""
    authority = programme_authority(request)
    account = account_visible_to(
        user=request.user, public_id=public_id, programme_authority=authority
    )
    if account is None:
        if not authority and user_is_programme_manager(user=request.user):
            raise DjangoPermissionDenied(PROGRAMME_MFA_REQUIRED)
        raise Http404
    return account


@login_required
def statement(request: HttpRequest, public_id, month: str) -> HttpResponse:
    account = _statement_account(request, public_id)
    data = statement_for(account=account, month=_month(month))
    return render(
        request,
        "credits/statement.html",
        {"statement": data, "months": statement_months(account=account)},
    )


@login_required
def statement_csv(request: HttpRequest, public_id, month: str) -> HttpResponse:
    account = _statement_account(request, public_id)
    data = statement_for(account=account, month=_month(month))
    rows = [
        [
            "section",
            "date",
            "kind",
            "description",
            "sandbox",
            "profile",
            "gpu_hours",
            "credit_seconds",
            "pkr",
        ]
    ]

    def row(section, at="", kind="", description="", sandbox="", profile="", seconds=0, pkr=0):
        # Descriptions and names are people's own text (a reason, a sandbox's name): every cell
        # goes through the formula guard (csv_response's), which leaves numbers as they are.
        rows.append(
            [
                section,
                at,
                kind,
                description,
                sandbox,
                profile,
                display_gpu_hours(seconds),
                seconds,
                display_pkr(pkr),
            ]
        )

    row("opening", seconds=data.opening, pkr=data.opening_pkr)
    for line in data.lines:
        row(
            "line",
            line.at.isoformat(),
            line.kind,
            line.description,
            seconds=line.credit_seconds,
            pkr=line.pkr,
        )
    for line in data.usage_by_sandbox:
        row(
            "usage",
            kind="usage",
            description=line.name,
            sandbox=line.sandbox,
            profile=line.profile,
            seconds=line.credit_seconds,
            pkr=line.pkr,
        )
    if data.model_usage is not None:
        row(
            "model_usage",
            kind="usage",
            seconds=data.model_usage.credit_seconds,
            pkr=data.model_usage.pkr,
        )
    for line in data.usage_by_model:
        # One row per model and key: the exact priced cost is in the description (it is not
        # whole credit-seconds); the charged total is the model_usage row above.
        row(
            "model",
            kind="usage",
            description=(
                f"{line.model} · {line.key_label or 'playground'} · {line.requests} requests · "
                f"{line.prompt_tokens}+{line.completion_tokens} tokens · "
                f"{line.cost_credit_seconds} credit-seconds"
            ),
        )
    for group, seconds in data.totals.items():
        row(f"total_{group}", seconds=seconds, pkr=data.totals_pkr[group])
    row("closing", seconds=data.closing, pkr=data.closing_pkr)
    return csv_response(rows, filename=f"statement-{month}.csv")
