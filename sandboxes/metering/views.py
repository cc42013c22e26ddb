"""The live-usage pages: a sandbox's own page (charts over a chosen range, live readings, the
balance and the stop countdown) and an organisation's live page (every member's live sandbox).
The first paint comes from the metering selectors, in the shape of the live messages
(messages.py); then static/js/sandbox-usage.js and organisation-live.js follow the live stream
(sandboxes/live/MESSAGES.md). Their addresses are under /sandboxes/ with the launcher's pages,
and their URL names are the launcher's (launcher:detail, launcher:organisation_live): see
urls.py."""

import datetime as dt
from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.credits.selectors import account_of
from portal.credits.units import display_gpu_hours
from portal.organisations.models import Organisation
from portal.organisations.selectors import organisation_for_user
from sandboxes.launcher.selectors import open_url, sandbox_for_user

from .selectors import (
    account_snapshot,
    latest_samples,
    open_run_get,
    organisation_running,
    sandbox_charged,
    sandbox_latest,
    usage_series,
)

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
    sandbox = sandbox_for_user(user=request.user, public_id=public_id)
    if sandbox is None:
        raise Http404
    range_key = request.GET.get("range")
    if range_key not in USAGE_RANGES:
        range_key = "1h"
    span, step = USAGE_RANGES[range_key]
    now = timezone.now()
    series = usage_series(sandbox=sandbox, start=now - span, end=now, step=step)
    gpus = sandbox.held_devices()
    run = open_run_get(sandbox=sandbox)
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
    organisation = organisation_for_user(user=request.user, public_id=public_id)
    if organisation is None or not organisation.is_active:
        raise Http404
    return organisation


@login_required
def organisation_live(request: HttpRequest, public_id) -> HttpResponse:
    organisation = _member_organisation(request, public_id)
    sandboxes = list(organisation_running(organisation=organisation))
    samples = latest_samples(sandboxes=sandboxes)
    account = account_of(organisation=organisation)
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
