"""Onboarding pages: choose a path, register a startup, join as a student."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.credits.selectors import account_of, available_credit_seconds, grants_of
from portal.organisations.views import PENDING_INVITATION_SESSION_KEY, organisation_url
from portal.users.selectors import user_has_verified_email

from . import services
from .forms import StartupForm, StudentForm
from .selectors import (
    OnboardingState,
    first_organisation,
    onboarding_state,
    university_for_email,
)


@login_required
def start(request: HttpRequest) -> HttpResponse:
    """Send each person where they belong; a newcomer chooses a path."""
    token = request.session.get(PENDING_INVITATION_SESSION_KEY)
    if token:
        return redirect("organisations:invitation_accept", token=token)
    state = onboarding_state(user=request.user)
    if state is OnboardingState.PROGRAMME_MANAGER:
        return redirect("dashboard:overview")
    if state is OnboardingState.ORGANISATION:
        return redirect(organisation_url(first_organisation(user=request.user)))
    if state is OnboardingState.STUDENT:
        return redirect("onboarding:student_home")
    return render(request, "onboarding/choose.html", _gate_context(request))


def _gate_context(request: HttpRequest) -> dict:
    return {"email_verified": user_has_verified_email(user=request.user)}


def _onboarding_form(
    request: HttpRequest, *, form_class, template: str, service, success, extra: dict
) -> HttpResponse:
    """GET shows the form; POST runs the service; a refusal lands on the field it concerns."""
    if onboarding_state(user=request.user) is not OnboardingState.NOT_STARTED:
        messages.info(request, _("You have already completed onboarding."))
        return redirect("onboarding:start")
    form = form_class(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                result = service(user=request.user, ip=client_ip(request), **form.cleaned_data)
            except ApplicationError as error:
                add_service_error(form, error)
            else:
                return success(result)
        status = 400
    context = {"form": form, **_gate_context(request), **extra}
    return render(request, template, context, status=status)


@login_required
def startup(request: HttpRequest) -> HttpResponse:
    def success(organisation):
        messages.success(
            request,
            _("%(organisation)s is registered. Invite your team below.")
            % {"organisation": organisation.legal_name},
        )
        return redirect(organisation_url(organisation))

    return _onboarding_form(
        request,
        form_class=StartupForm,
        template="onboarding/startup.html",
        service=services.startup_onboard,
        success=success,
        extra={},
    )


@login_required
def student(request: HttpRequest) -> HttpResponse:
    def success(profile):
        messages.success(request, _("Welcome! Your student account is ready."))
        return redirect("onboarding:student_home")

    return _onboarding_form(
        request,
        form_class=StudentForm,
        template="onboarding/student.html",
        service=services.student_onboard,
        success=success,
        extra={"email_university": university_for_email(email=request.user.email)},
    )


@login_required
def student_home(request: HttpRequest) -> HttpResponse:
    profile = getattr(request.user, "student_profile", None)
    if profile is None:
        return redirect("onboarding:start")
    account = account_of(user=request.user)
    context = {
        "profile": profile,
        "account": account,
        "available": available_credit_seconds(account=account) if account else 0,
        "grants": grants_of(account=account) if account else [],
    }
    return render(request, "onboarding/student_home.html", context)
