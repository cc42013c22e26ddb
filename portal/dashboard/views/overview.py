"""The programme at a glance."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _

from sandboxes.metering.selectors import cluster_snapshot

from ..access import programme_manager_required
from ..selectors.cluster import cluster_hourly
from ..selectors.overview import (
    cluster_now,
    ledger_month,
    programme_overview,
    recent_organisations,
    recent_students,
    sandbox_queue,
)

OVERVIEW_HOURS = 7 * 24


@programme_manager_required
def overview(request: HttpRequest) -> HttpResponse:
    """The programme at a glance. A fixed number of queries whatever its size (charts drawn by
    static/js/overview.js from the embedded series)."""
    ledger = ledger_month(month=timezone.localdate().replace(day=1))
    hours = cluster_hourly(hours=OVERVIEW_HOURS)
    charts = {
        "utilisation": hours.series,
        "usage": ledger.daily_series(),
        "text": {
            "util_pct": _("Average utilisation"),
            "held_pct": _("GPU time held"),
            "idle_held_pct": _("Held but idle"),
            "gpu_hours": _("GPU-hours used"),
        },
    }
    context = {
        "overview": programme_overview(),
        "ledger": ledger,
        "queue": sandbox_queue(),
        "cluster": cluster_now(snapshot=cluster_snapshot()),
        "utilisation_days": hours.days,
        "charts": charts,
        "organisations": recent_organisations(),
        "students": recent_students(),
    }
    return render(request, "dashboard/overview.html", context)
