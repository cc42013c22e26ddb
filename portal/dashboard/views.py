"""Programme-manager pages. Selectors read; services write; every page is behind the gate."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from portal.audit.selectors import audit_actions, audit_events_list
from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.onboarding.models import Cohort
from portal.onboarding.services import cohort_create

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
