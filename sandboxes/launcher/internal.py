"""The hub's questions to the portal (the spawner calls these before and after each server).

Authenticated with the hub-to-portal secret (`Authorization: Bearer <HUB_SPAWN_SECRET>`), never
with a session or an API key; not part of the public API, and not in its schema.
"""

from __future__ import annotations

import hmac
import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services

logger = logging.getLogger(__name__)


def _authorised(request: HttpRequest) -> bool:
    secret = settings.HUB_SPAWN_SECRET
    header = request.headers.get("Authorization", "")
    scheme, _sep, presented = header.partition(" ")
    return bool(secret) and scheme == "Bearer" and hmac.compare_digest(presented, secret)


def _server(request: HttpRequest) -> tuple[str, str] | JsonResponse:
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"detail": "The body must be JSON."}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"detail": "The body must be a JSON object."}, status=400)
    username, server = body.get("username"), body.get("server_name")
    if not (isinstance(username, str) and isinstance(server, str) and username and server):
        return JsonResponse(
            {"detail": "username and server_name are required strings."}, status=400
        )
    if len(username) > 64 or len(server) > 64:
        return JsonResponse({"detail": "username or server_name is too long."}, status=400)
    return username, server


@csrf_exempt
@require_POST
def spawn_spec(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        return JsonResponse({"detail": "Not authenticated."}, status=401)
    parsed = _server(request)
    if isinstance(parsed, JsonResponse):
        return parsed
    username, server = parsed
    try:
        spec = services.spawn_spec(hub_username=username, server_name=server)
    except services.SpawnRefused as exc:
        logger.warning("spawn refused for %s/%s: %s", username, server, exc)
        return JsonResponse({"detail": str(exc)}, status=403)
    return JsonResponse(spec)


@csrf_exempt
@require_POST
def server_stopped(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        return JsonResponse({"detail": "Not authenticated."}, status=401)
    parsed = _server(request)
    if isinstance(parsed, JsonResponse):
        return parsed
    username, server = parsed
    sandbox = services.sandbox_for_server(hub_username=username, server_name=server)
    if sandbox is not None and sandbox.status in (
        sandbox.Status.RUNNING,
        sandbox.Status.STOPPING,
    ):
        # Stopped by the hub itself (idle culler, the person's own "stop" in the hub UI).
        services.sandbox_mark_stopped(
            sandbox_id=sandbox.pk, reason=_("The notebook server stopped.")
        )
    return HttpResponse(status=204)
