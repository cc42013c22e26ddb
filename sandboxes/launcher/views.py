"""The sandboxes page: launch (image and profile picker with live availability and runway),
watch the start, open, stop, start again, delete. Thin: the same services as the API.

A sandbox's own page and an organisation's live page, which show usage as it happens, are
metering's (metering/views.py)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.organisations.selectors import organisations_of
from sandboxes.gpus.selectors import inventory_is_simulated

from . import services
from .disk import home_quota_check
from .forms import DeleteForm, LaunchForm
from .selectors import (
    launch_choices,
    open_url,
    queue_position,
    sandbox_for_user,
    sandboxes_for_user,
)


def _rows(user):
    rows = []
    for sandbox in sandboxes_for_user(user=user):
        rows.append(
            {
                "sandbox": sandbox,
                "queue_position": queue_position(sandbox),
                "gpus": sandbox.held_devices(),
                "open_url": open_url(sandbox),
            }
        )
    return rows


@login_required
def sandbox_list(request: HttpRequest) -> HttpResponse:
    choices = launch_choices(user=request.user)
    data = request.POST if request.method == "POST" else None
    form = LaunchForm(data, user=request.user, profiles=choices.profiles)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                sandbox = services.sandbox_launch(
                    user=request.user,
                    image=form.cleaned_data["image"],
                    profile=form.cleaned_data["profile"],
                    organisation=form.cleaned_data.get("organisation"),
                    name=form.cleaned_data["name"],
                    ip=client_ip(request),
                )
            except ApplicationError as exc:
                add_service_error(form, exc)
            else:
                if sandbox.status == sandbox.Status.QUEUED:
                    messages.info(request, _("No GPU is free right now: your sandbox is queued."))
                else:
                    messages.success(request, _("Your sandbox is starting."))
                warning = home_quota_check(user=request.user, profile=sandbox.profile)
                if warning:
                    messages.warning(request, warning)
                return redirect("launcher:list")
        status = 400
    context = {
        "form": form,
        "choices": choices,
        "profiles": {choice.profile.slug: choice for choice in choices.profiles},
        "rows": _rows(request.user),
        "simulated": inventory_is_simulated(),
        "min_runway": settings.SANDBOX_MIN_RUNWAY_MINUTES,
        "live_organisations": organisations_of(user=request.user).filter(is_active=True),
    }
    return render(request, "sandboxes/list.html", context, status=status)


def _own(request, public_id):
    sandbox = sandbox_for_user(user=request.user, public_id=public_id)
    if sandbox is None:
        raise Http404
    return sandbox


def _act(request: HttpRequest, public_id, service, done: str) -> HttpResponse:
    """Run a stop or start service on one of the person's sandboxes; say how it went."""
    try:
        service(sandbox=_own(request, public_id), acting_user=request.user, ip=client_ip(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("launcher:list")


@login_required
@require_POST
def sandbox_stop(request: HttpRequest, public_id) -> HttpResponse:
    return _act(
        request, public_id, services.sandbox_stop, _("Stopping your sandbox. Your files are kept.")
    )


@login_required
@require_POST
def sandbox_start(request: HttpRequest, public_id) -> HttpResponse:
    return _act(request, public_id, services.sandbox_restart, _("Starting your sandbox again."))


@login_required
def sandbox_delete(request: HttpRequest, public_id) -> HttpResponse:
    sandbox = _own(request, public_id)
    form = DeleteForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            services.sandbox_delete(
                sandbox=sandbox,
                acting_user=request.user,
                delete_home=form.cleaned_data["delete_home"],
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            add_service_error(form, exc)
        else:
            messages.success(
                request,
                _("Sandbox deleted, and your home folder with it.")
                if form.cleaned_data["delete_home"]
                else _("Sandbox deleted. Your home folder is kept."),
            )
            return redirect("launcher:list")
    status = 400 if request.method == "POST" else 200
    return render(
        request, "sandboxes/delete.html", {"sandbox": sandbox, "form": form}, status=status
    )
