"""An organisation's request-logging setting. Members who do not manage the organisation are
refused (403); people outside it see a 404, as for an organisation that does not exist."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from inference.usage import services as usage_services
from inference.usage.models import RequestLogPolicy
from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.organisations.models import Membership
from portal.organisations.selectors import organisation_for_user

from .forms import RequestLogPolicyForm


@login_required
def policy_settings(request: HttpRequest, public_id) -> HttpResponse:
    organisation = organisation_for_user(user=request.user, public_id=public_id)
    if organisation is None:
        raise Http404
    if (
        not Membership.objects.managers()
        .filter(organisation=organisation, user=request.user)
        .exists()
    ):
        raise PermissionDenied
    policy = RequestLogPolicy.objects.filter(organisation=organisation).first()
    current = policy.retention_days if policy else 0
    form = RequestLogPolicyForm(request.POST or None, initial={"retention_days": current})
    if request.method == "POST" and form.is_valid():
        try:
            usage_services.request_log_policy_set(
                organisation=organisation,
                retention_days=form.cleaned_data["retention_days"],
                acting_user=request.user,
                ip=client_ip(request),
            )
        except ApplicationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, _("Request logging saved."))
            return redirect("request_logging:settings", public_id=organisation.public_id)
    status = 400 if form.is_bound and form.errors else 200
    return render(
        request,
        "models/request_logging.html",
        {"organisation": organisation, "form": form, "policy": policy, "current": current},
        status=status,
    )
