"""The programme directory: organisations and students, their detail pages, and suspension.

Views parse and render; the directory selectors read, portal.suspension suspends and
reactivates. Every page is behind the programme managers' gate.
"""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.credits.models import CreditApplication
from portal.credits.selectors import account_of
from portal.organisations.selectors import memberships_list
from portal.suspension.services import SuspensionOutcome, reactivate, suspend

from ..access import programme_manager_required
from ..forms.directory import OrganisationFilterForm, StudentFilterForm, SuspensionForm
from ..listing import filtered_page
from ..selectors import directory as selectors

PAGE_SIZE = 50
ERROR_STATUS = {"permission_denied": 403, "wrong_state": 409}


def _outcome_message(request: HttpRequest, outcome: SuspensionOutcome, *, done: str) -> None:
    if not outcome.changed:
        messages.info(request, _("Nothing to do: it was already so."))
        return
    parts = [done]
    if outcome.sandboxes_stopped:
        count = len(outcome.sandboxes_stopped)
        parts.append(
            ngettext("%(n)s sandbox is stopping.", "%(n)s sandboxes are stopping.", count)
            % {"n": count}
        )
    if outcome.sessions_ended:
        count = outcome.sessions_ended
        parts.append(
            ngettext("%(n)s session ended.", "%(n)s sessions ended.", count) % {"n": count}
        )
    messages.success(request, " ".join(parts))


def _decide(request: HttpRequest, service, target_kwargs: dict, *, done: str):
    """Run a suspension or reactivation from the posted reason. Returns None when it was done
    (the caller redirects), else the bound form with the error and the status to answer."""
    form = SuspensionForm(request.POST)
    if not form.is_valid():
        return form, 400
    try:
        outcome = service(
            **target_kwargs,
            reason=form.cleaned_data["reason"],
            acting_user=request.user,
            ip=client_ip(request),
        )
    except ApplicationError as error:
        add_service_error(form, error)
        return form, ERROR_STATUS.get(error.code, 400)
    _outcome_message(request, outcome, done=done)
    return None


# --- Organisations -----------------------------------------------------------------------------


@programme_manager_required
def organisations(request: HttpRequest) -> HttpResponse:
    form = OrganisationFilterForm(request.GET or None)
    context, status = filtered_page(
        request,
        form,
        lambda filters: selectors.organisations_directory(
            search=filters.get("q", ""),
            sector=filters.get("sector", ""),
            province=filters.get("province", ""),
            status=filters.get("status", ""),
            ordering=filters.get("ordering") or "name",
        ),
        PAGE_SIZE,
    )
    return render(request, "dashboard/directory/organisations.html", context, status=status)


def _organisation_or_404(public_id):
    organisation = selectors.organisation_directory_get(public_id=public_id)
    if organisation is None:
        raise Http404
    return organisation


def _organisation_page(request, organisation, *, form=None, status=200) -> HttpResponse:
    account = account_of(organisation=organisation)
    context = {
        "organisation": organisation,
        "account": account,
        "members": memberships_list(organisation=organisation),
        "grants": selectors.grants_listed(account=account),
        "ledger": selectors.ledger_recent(account=account),
        "sandboxes": selectors.sandboxes_of_organisation(organisation=organisation),
        "api_keys": selectors.api_keys_of(organisation=organisation),
        "events": selectors.audit_events_about(
            target=organisation,
            account=account,
            extra=[
                (
                    CreditApplication._meta.label_lower,
                    selectors.organisation_application_ids(organisation=organisation),
                )
            ],
        ),
        "suspension_form": form or SuspensionForm(),
    }
    return render(request, "dashboard/directory/organisation.html", context, status=status)


@programme_manager_required
def organisation(request: HttpRequest, public_id) -> HttpResponse:
    return _organisation_page(request, _organisation_or_404(public_id))


def _organisation_decision(request: HttpRequest, public_id, service, done: str) -> HttpResponse:
    organisation = _organisation_or_404(public_id)
    refused = _decide(request, service, {"subject": organisation}, done=done)
    if refused is None:
        return redirect("dashboard:organisation", public_id=public_id)
    form, status = refused
    organisation = _organisation_or_404(public_id)
    return _organisation_page(request, organisation, form=form, status=status)


@programme_manager_required
@require_POST
def organisation_suspend_view(request: HttpRequest, public_id) -> HttpResponse:
    return _organisation_decision(request, public_id, suspend, _("The organisation is suspended."))


@programme_manager_required
@require_POST
def organisation_reactivate_view(request: HttpRequest, public_id) -> HttpResponse:
    return _organisation_decision(
        request, public_id, reactivate, _("The organisation is active again.")
    )


# --- Students ----------------------------------------------------------------------------------


@programme_manager_required
def students(request: HttpRequest) -> HttpResponse:
    form = StudentFilterForm(request.GET or None)
    context, status = filtered_page(
        request,
        form,
        lambda filters: selectors.students_directory(
            search=filters.get("q", ""),
            university=filters.get("university"),
            cohort=filters.get("cohort"),
            status=filters.get("status", ""),
            ordering=filters.get("ordering") or "email",
        ),
        PAGE_SIZE,
    )
    return render(request, "dashboard/directory/students.html", context, status=status)


def _student_or_404(hub_username: str):
    student = selectors.student_directory_get(hub_username=hub_username)
    if student is None:
        raise Http404
    return student


def _student_page(request, student, *, form=None, status=200) -> HttpResponse:
    person = student.user
    account = account_of(user=person)
    context = {
        "student": student,
        "person": person,
        "account": account,
        "memberships": selectors.memberships_of_person(user=person),
        "grants": selectors.grants_listed(account=account),
        "ledger": selectors.ledger_recent(account=account),
        "sandboxes": selectors.sandboxes_of_person(user=person),
        "api_keys": selectors.api_keys_of(user=person),
        "events": selectors.audit_events_about(target=person, account=account),
        "suspension_form": form or SuspensionForm(),
    }
    return render(request, "dashboard/directory/student.html", context, status=status)


@programme_manager_required
def student(request: HttpRequest, hub_username: str) -> HttpResponse:
    return _student_page(request, _student_or_404(hub_username))


def _student_decision(request: HttpRequest, hub_username: str, service, done: str):
    student = _student_or_404(hub_username)
    refused = _decide(request, service, {"subject": student.user}, done=done)
    if refused is None:
        return redirect("dashboard:student", hub_username=hub_username)
    form, status = refused
    return _student_page(request, _student_or_404(hub_username), form=form, status=status)


@programme_manager_required
@require_POST
def student_suspend_view(request: HttpRequest, hub_username: str) -> HttpResponse:
    return _student_decision(request, hub_username, suspend, _("The student is suspended."))


@programme_manager_required
@require_POST
def student_reactivate_view(request: HttpRequest, hub_username: str) -> HttpResponse:
    return _student_decision(request, hub_username, reactivate, _("The student is active again."))
