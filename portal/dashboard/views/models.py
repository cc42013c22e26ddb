"""The model API's programme pages, under /programme/models/: the catalogue (list, add, change
prices and visibility, take out and offer again), deployments (deploy on N GPUs × R replicas,
scale, stop, each replica's state) and a month of model usage beside what serving cost.

Thin: forms parse, the catalogue's and the deployments' services decide and audit, selectors
read. A refusal shows the service's message and changes nothing.
"""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from inference.catalogue.models import ServedModel
from inference.catalogue.services import (
    served_model_create,
    served_model_restore,
    served_model_update,
    served_model_withdraw,
)
from inference.deployments.models import Deployment
from inference.deployments.services import deployment_create, deployment_scale, deployment_stop
from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.core.spreadsheets import csv_response
from portal.credits.units import month_parse

from ..access import programme_manager_required
from ..forms.models import DeployForm, ScaleForm, ServedModelEditForm, ServedModelForm
from ..selectors.figures import this_month
from ..selectors.models import (
    deployment_active,
    deployments_active,
    model_usage_report,
    replicas_of,
    served_models_list,
)


@programme_manager_required
def models_list(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/models/list.html", {"models": served_models_list()})


@programme_manager_required
def model_create(request: HttpRequest) -> HttpResponse:
    form = ServedModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = served_model_create(
                **form.cleaned_data, acting_user=request.user, ip=client_ip(request)
            )
        except ApplicationError as error:
            add_service_error(form, error)
        else:
            messages.success(
                request,
                _("%(name)s is in the catalogue. Deploy it so that people can call it.")
                % {"name": model.name},
            )
            return redirect("dashboard:model", public_id=model.public_id)
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "dashboard/models/create.html", {"form": form}, status=status)


def _model_page(
    request: HttpRequest,
    model: ServedModel,
    *,
    form: ServedModelEditForm | None = None,
    deploy_form: DeployForm | None = None,
    scale_form: ScaleForm | None = None,
    status: int = 200,
) -> HttpResponse:
    deployment = deployment_active(model=model)
    return render(
        request,
        "dashboard/models/detail.html",
        {
            "model": model,
            "form": form or ServedModelEditForm(model=model),
            "deployment": deployment,
            "replicas": replicas_of(deployment=deployment) if deployment else [],
            "deploy_form": deploy_form or DeployForm(),
            "scale_form": scale_form
            or ScaleForm(initial={"replicas": deployment.replicas_wanted if deployment else 1}),
        },
        status=status,
    )


@programme_manager_required
def model_detail(request: HttpRequest, public_id) -> HttpResponse:
    """A model's settings to change, and its deployment: deploy, scale, stop, its replicas."""
    model = get_object_or_404(
        ServedModel.objects.select_related("organisation", "cohort"), public_id=public_id
    )
    if request.method != "POST":
        return _model_page(request, model)
    form = ServedModelEditForm(request.POST, model=model)
    if form.is_valid():
        try:
            served_model_update(
                model=model, **form.cleaned_data, acting_user=request.user, ip=client_ip(request)
            )
        except ApplicationError as error:
            add_service_error(form, error)
        else:
            messages.success(request, _("Model saved."))
            return redirect("dashboard:model", public_id=public_id)
    return _model_page(request, model, form=form, status=400)


@programme_manager_required
@require_POST
def model_withdraw(request: HttpRequest, public_id) -> HttpResponse:
    model = get_object_or_404(ServedModel, public_id=public_id)
    action = served_model_restore if request.POST.get("restore") else served_model_withdraw
    try:
        action(model=model, acting_user=request.user, ip=client_ip(request))
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("dashboard:model", public_id=public_id)
    if model.is_active:
        messages.success(request, _("The model is offered again."))
    else:
        messages.success(request, _("The model is out of the catalogue: no one can call it."))
    return redirect("dashboard:model", public_id=public_id)


@programme_manager_required
@require_POST
def model_deploy(request: HttpRequest, public_id) -> HttpResponse:
    model = get_object_or_404(ServedModel, public_id=public_id)
    form = DeployForm(request.POST)
    if form.is_valid():
        try:
            deployment_create(
                model=model,
                gpus_per_replica=form.cleaned_data["gpus_per_replica"],
                replicas=form.cleaned_data["replicas"],
                gpu_model=form.cleaned_data["gpu_model"],
                acting_user=request.user,
            )
        except ApplicationError as error:
            if error.field not in form.fields:
                return _refused(request, model, error)
            add_service_error(form, error)
        else:
            messages.success(
                request, _("Deployment requested: its replicas start as GPUs are free.")
            )
            return redirect("dashboard:model", public_id=public_id)
    return _model_page(request, model, deploy_form=form, status=400)


def _refused(request: HttpRequest, model: ServedModel, error: ApplicationError) -> HttpResponse:
    """A refusal that belongs to no field of the form (the model is deployed already, the
    deployment was stopped meanwhile): said at the top of the model's page, as it is now."""
    messages.error(request, error.message)
    return redirect("dashboard:model", public_id=model.public_id)


def _deployment_or_404(public_id) -> Deployment:
    return get_object_or_404(Deployment.objects.select_related("model"), public_id=public_id)


@programme_manager_required
@require_POST
def deployment_scale_view(request: HttpRequest, public_id) -> HttpResponse:
    deployment = _deployment_or_404(public_id)
    form = ScaleForm(request.POST)
    if form.is_valid():
        try:
            deployment_scale(
                deployment=deployment,
                replicas=form.cleaned_data["replicas"],
                acting_user=request.user,
            )
        except ApplicationError as error:
            if error.field not in form.fields:
                return _refused(request, deployment.model, error)
            add_service_error(form, error)
        else:
            messages.success(
                request,
                _("The deployment now wants %(n)d replicas.")
                % {"n": form.cleaned_data["replicas"]},
            )
            return redirect("dashboard:model", public_id=deployment.model.public_id)
    return _model_page(request, deployment.model, scale_form=form, status=400)


@programme_manager_required
@require_POST
def deployment_stop_view(request: HttpRequest, public_id) -> HttpResponse:
    deployment = _deployment_or_404(public_id)
    try:
        deployment_stop(deployment=deployment, acting_user=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, _("The deployment is stopped; its GPUs are released."))
    return redirect("dashboard:model", public_id=deployment.model.public_id)


@programme_manager_required
def deployments(request: HttpRequest) -> HttpResponse:
    return render(
        request, "dashboard/models/deployments.html", {"deployments": deployments_active()}
    )


def _month(request: HttpRequest):
    """The report's month from ?month=YYYY-MM, this month when not given; 404 for no month."""
    month_text = request.GET.get("month")
    month = this_month() if not month_text else month_parse(month_text)
    if month is None:
        raise Http404(_("No such month."))
    return month


@programme_manager_required
def model_usage(request: HttpRequest) -> HttpResponse:
    """A month of model usage (?month=YYYY-MM; this month by default)."""
    month = _month(request)
    return render(
        request,
        "dashboard/models/usage.html",
        {"report": model_usage_report(month=month), "this_month": this_month()},
    )


@programme_manager_required
def model_usage_export(request: HttpRequest) -> HttpResponse:
    """The month's model usage as CSV: the page's rows, exact microcredit-seconds beside the
    credit-seconds, and each model's GPU-seconds of serving when they are recorded."""
    report = model_usage_report(month=_month(request))
    header = [
        "dimension",
        "key",
        "name",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost_microcredit_seconds",
        "credit_seconds",
        "serving_gpu_seconds",
    ]

    def line(dimension: str, row) -> list:
        return [
            dimension,
            row.key,
            row.name,
            row.requests,
            row.prompt_tokens,
            row.completion_tokens,
            row.cost_microcredits,
            row.credit_seconds,
            "" if row.gpu_seconds is None else row.gpu_seconds,
        ]

    rows = [header]
    rows += [line("model", row) for row in report.by_model]
    rows += [line("organisation", row) for row in report.by_organisation]
    rows.append(line("total", report.total))
    return csv_response(rows, filename=f"model-usage-{report.month:%Y-%m}.csv")
