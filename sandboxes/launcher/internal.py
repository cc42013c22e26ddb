"""The hub's questions to the portal (the spawner calls these before and after each server).

Served only to the hub's addresses (`HUB_INTERNAL_ALLOWED_IPS`, matched against the connection's
own address, never a forwarded header; anyone else gets a 404) and authenticated with the
hub-to-portal secret (`Authorization: Bearer <HUB_SPAWN_SECRET>`), never with a session or an
API key; not part of the public API, and not in its schema.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from functools import wraps

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import entitlement, services

logger = logging.getLogger(__name__)


def _from_hub(request: HttpRequest) -> bool:
    """The connection comes from one of the hub's addresses. REMOTE_ADDR is the peer of the TCP
    connection (a reverse proxy in front of the portal must not forward /internal/)."""
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if peer.version == 6 and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    allowed = []
    for entry in settings.HUB_INTERNAL_ALLOWED_IPS:
        try:
            allowed.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            logger.error("HUB_INTERNAL_ALLOWED_IPS: %r is not an address or network", entry)
    return any(peer in network for network in allowed)


def _hub_only(view):
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not _from_hub(request):
            logger.warning(
                "internal API %s refused to %s", request.path, request.META.get("REMOTE_ADDR")
            )
            raise Http404
        return view(request, *args, **kwargs)

    return wrapper


def _authorised(request: HttpRequest) -> bool:
    secret = settings.HUB_SPAWN_SECRET
    header = request.headers.get("Authorization", "")
    scheme, _sep, presented = header.partition(" ")
    # Bytes: compare_digest refuses non-ASCII str, and a hostile header must be a 401, not a 500.
    return (
        bool(secret)
        and scheme == "Bearer"
        and hmac.compare_digest(presented.encode(), secret.encode())
    )


def _server(request: HttpRequest) -> tuple[str, str, dict] | JsonResponse:
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
    return username, server, body


@csrf_exempt
@_hub_only
@require_POST
def spawn_spec(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        return JsonResponse({"detail": "Not authenticated."}, status=401)
    parsed = _server(request)
    if isinstance(parsed, JsonResponse):
        return parsed
    username, server, _body = parsed
    try:
        spec = entitlement.spawn_spec(hub_username=username, server_name=server)
    except entitlement.SpawnRefused as exc:
        logger.warning("spawn refused for %s/%s: %s", username, server, exc)
        return JsonResponse({"detail": str(exc)}, status=403)
    return JsonResponse(spec)


@csrf_exempt
@_hub_only
@require_POST
def server_stopped(request: HttpRequest) -> HttpResponse:
    if not _authorised(request):
        return JsonResponse({"detail": "Not authenticated."}, status=401)
    parsed = _server(request)
    if isinstance(parsed, JsonResponse):
        return parsed
    username, server, body = parsed
    start = body.get("start")
    if start is not None and not (isinstance(start, str) and len(start) <= 64):
        return JsonResponse({"detail": "start must be the start id of the spawn spec."}, status=400)
    # Stopped by the hub itself (idle culler, the person's own "stop" in the hub UI, a crash);
    # a report about an earlier start of a restarted sandbox is ignored.
    services.sandbox_server_gone(hub_username=username, server_name=server, start_id=start or None)
    return HttpResponse(status=204)
