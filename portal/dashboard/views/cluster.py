"""The cluster: every GPU now, then live; its last days; who holds GPUs idle."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _

from sandboxes.gpus.models import GpuDevice
from sandboxes.metering.selectors import cluster_snapshot

from ..access import programme_manager_required
from ..selectors.cluster import device_history, holders_idle, top_consumers

CLUSTER_HISTORY_DAYS = 14


@programme_manager_required
def cluster(request: HttpRequest) -> HttpResponse:
    """Every GPU as a tile, first painted from the latest samples, then live over
    /ws/live/cluster/ (static/js/cluster.js); below, the last days: per device per day, idle
    but allocated time per holder, and this month's top consumers (static/js/cluster-history.js
    draws the days)."""
    snapshot = cluster_snapshot()
    health = {value: str(label) for value, label in GpuDevice.Health.choices}
    for tile in snapshot["gpus"]:
        tile["health_label"] = health.get(tile["health"], tile["health"])
    live = {"ws_path": "/ws/live/cluster/", "text": {"free": _("Free"), "health": health}}
    now = timezone.now()
    history = device_history(days=CLUSTER_HISTORY_DAYS)
    context = {
        "snapshot": snapshot,
        "live": live,
        "history": history,
        "history_chart": {
            "series": history.series,
            "text": {
                "held_hours": _("GPU-hours held"),
                "idle_held_hours": _("of which idle"),
            },
        },
        # Over the same days as the devices' table, so the holders' idle hours add up to it.
        "hoarding": holders_idle(start=history.start, end=now, now=now),
        "consumers": top_consumers(month=timezone.localdate().replace(day=1)),
        "history_days": CLUSTER_HISTORY_DAYS,
        "idle_threshold_pct": 5,
    }
    return render(request, "dashboard/cluster.html", context)
