"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Django is set up (get_asgi_application) before anything that imports models. WebSockets: the
live streams (sandboxes.live: sandbox status, spawn progress, usage, credits, the cluster),
behind the live Origin check (browsers: ALLOWED_HOSTS; API clients: a key, no Origin) and the
session. /llm/v1 is served by the gateway's own Django handler, without the browser's
middleware (inference.gateway.asgi).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.local")

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from inference.gateway.asgi import ApiHandler, gateway_asgi  # noqa: E402
from sandboxes.live.origins import LiveOriginValidator  # noqa: E402
from sandboxes.live.routing import websocket_urlpatterns  # noqa: E402

application = gateway_asgi(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": LiveOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    ),
    # /llm/v1 (bearer keys, no browser): a handler with only the security headers' middleware
    api=ApiHandler(),
)
