"""Cohorts: the list with a form for a new one, a cohort's page, closing its code."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.onboarding.models import Cohort
from portal.onboarding.services import cohort_create, cohort_deactivate, cohort_update

from ..access import programme_manager_required
from ..forms.cohorts import CohortEditForm, CohortForm
from ..selectors.cohorts import cohort_members, cohorts_list

COHORT_MEMBERS_PAGE_SIZE = 100


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
