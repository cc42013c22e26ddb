"""The sandboxes page: launch (image and profile picker with live availability and runway),
watch the start, open, stop, start again, delete. Thin: the same services as the API.

A sandbox's own page and an organisation's live page show usage as it happens: the first paint
comes from the metering selectors, then static/js/sandbox-usage.js and organisation-live.js
follow the live stream (sandboxes/live/MESSAGES.md)."""

import datetime as dt
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.credits.selectors import account_for_organisation_get
from portal.credits.units import display_gpu_hours
from portal.organisations.models import Organisation
from portal.organisations.selectors import organisations_of
from sandboxes.gpus.selectors import inventory_is_simulated
from sandboxes.metering.selectors import (
    account_snapshot,
    latest_samples,
    organisation_running,
    run_open,
    sandbox_charged,
    sandbox_latest,
    usage_series,
)

from . import services
from .disk import home_quota_check
from .forms import DeleteForm, LaunchForm
from .selectors import launch_choices, open_url, queue_position, sandboxes_for_user


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
    sandbox = sandboxes_for_user(user=request.user).filter(public_id=public_id).first()
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


# --- Live usage -----------------------------------------------------------------------------

# The sandbox page's ranges: how far back, and the roll-up that keeps the chart small.
USAGE_RANGES = {
    "1h": (dt.timedelta(hours=1), "raw"),
    "24h": (dt.timedelta(hours=24), "minute"),
    "7d": (dt.timedelta(days=7), "hour"),
}


def _live_text() -> dict:
    """What the live scripts write themselves, translated here (the same words as the
    `runway` template filter)."""
    return {
        "none": _("none"),
        "unlimited": "—",
        "days": _("%(days)s days"),
        "hours_minutes": _("%(h)s h %(m)s min"),
        "minutes": _("%(m)s min"),
        "load_failed": _("The usage could not be loaded. Try again in a moment."),
        "stopping_now": _("Stopping now"),
        "threshold": _("GPU credits are running low: less than %(percent)s%% of a grant is left."),
    }


def _stop_at(sandbox, run, snapshot: dict) -> dt.datetime | None:
    """When this sandbox stops for want of credits: its open run's countdown, else its
    account's (the metering tick starts every run of a dry account counting down together)."""
    if not sandbox.is_live:
        return None
    if run is not None and run.stop_at is not None:
        return run.stop_at
    return dt.datetime.fromisoformat(snapshot["stop_at"]) if snapshot["stop_at"] else None


def _clock(stop_at: dt.datetime | None, now: dt.datetime) -> str:
    """Time left before a stop as "m:ss" (the page's script then counts it down)."""
    if stop_at is None:
        return ""
    minutes, seconds = divmod(max(0, int((stop_at - now).total_seconds())), 60)
    return f"{minutes}:{seconds:02d}"


@login_required
def sandbox_detail(request: HttpRequest, public_id) -> HttpResponse:
    sandbox = _own(request, public_id)
    range_key = request.GET.get("range")
    if range_key not in USAGE_RANGES:
        range_key = "1h"
    span, step = USAGE_RANGES[range_key]
    now = timezone.now()
    series = usage_series(sandbox=sandbox, start=now - span, end=now, step=step)
    gpus = sandbox.held_devices()
    run = run_open(sandbox=sandbox)
    snapshot = account_snapshot(account=sandbox.account)
    charged = sandbox_charged(sandbox=sandbox)
    stop_at = _stop_at(sandbox, run, snapshot)
    live = {
        "sandbox": str(sandbox.public_id),
        "account": snapshot["account"],
        "range": range_key,
        "ranges": {
            key: {"seconds": int(value[0].total_seconds()), "step": value[1]}
            for key, value in USAGE_RANGES.items()
        },
        "series": series,
        "usage_url": reverse("api-v1:usage"),
        # usage.sample carries the open run's charge; the page adds the runs before it.
        "charged_before_run": charged - (run.charged_credit_seconds if run else 0),
        "stop_at": stop_at.isoformat() if stop_at else None,
        "now": now.isoformat(),
        "text": _live_text(),
    }
    context = {
        "sandbox": sandbox,
        "gpus": gpus,
        "gpu_memory_total_mib": sum(device.memory_mib for device in gpus) or None,
        "simulated": any(device.simulated for device in gpus),
        "open_url": open_url(sandbox),
        "latest": sandbox_latest(sandbox=sandbox),
        "snapshot": snapshot,
        "burn_gpu_hours_per_hour": display_gpu_hours(snapshot["burn_credit_seconds_per_hour"]),
        "charged_gpu_hours": display_gpu_hours(charged),
        # Four places (a third of a second of one GPU): the balance visibly burns.
        "balance_gpu_hours_fine": f"{Decimal(snapshot['balance_credit_seconds']) / 3600:.4f}",
        "stop_at": stop_at,
        "clock": _clock(stop_at, now),
        "range_key": range_key,
        "ranges": [("1h", _("Last hour")), ("24h", _("Last 24 hours")), ("7d", _("Last 7 days"))],
        "live": live,
    }
    return render(request, "sandboxes/detail.html", context)


def _member_organisation(request, public_id) -> Organisation:
    """An active organisation the person belongs to; 404 hides every other."""
    organisation = (
        Organisation.objects.for_user(request.user)
        .filter(public_id=public_id, is_active=True)
        .first()
    )
    if organisation is None:
        raise Http404
    return organisation


@login_required
def organisation_live(request: HttpRequest, public_id) -> HttpResponse:
    organisation = _member_organisation(request, public_id)
    sandboxes = list(organisation_running(organisation=organisation))
    samples = latest_samples(sandboxes=sandboxes)
    account = account_for_organisation_get(organisation)
    snapshot = account_snapshot(account=account) if account is not None else None
    context = {
        "organisation": organisation,
        "rows": [{"sandbox": sandbox, "latest": samples.get(sandbox.pk)} for sandbox in sandboxes],
        "snapshot": snapshot,
        "burn_gpu_hours_per_hour": display_gpu_hours(snapshot["burn_credit_seconds_per_hour"])
        if snapshot
        else None,
        "live": {
            "ws_path": f"/ws/live/organisation/{organisation.public_id}/",
            "account": snapshot["account"] if snapshot else None,
            "text": _live_text(),
        },
    }
    return render(request, "sandboxes/organisation.html", context)
