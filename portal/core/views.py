"""Health endpoints and the landing page."""

from django.http import HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.defaults import server_error as django_server_error

from .api.errors import error_body
from .health import readiness


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests; touches nothing else."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Every dependency the portal needs answers: 200 when all do, 503 with detail otherwise."""
    results = readiness()
    ready = all(result.ok for result in results)
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {
            result.name: {"ok": result.ok, "latency_ms": result.latency_ms}
            | ({"error": result.error} if result.error else {})
            for result in results
        },
    }
    return JsonResponse(body, status=200 if ready else 503)


def home(request: HttpRequest):
    if request.user.is_authenticated:
        return redirect("onboarding:start")
    return render(request, "core/home.html")


def server_error(request: HttpRequest):
    """500: in the API's error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            error_body("server_error", "Something went wrong on our side. Try again later."),
            status=500,
        )
    return django_server_error(request)
