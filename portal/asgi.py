"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Django is set up (get_asgi_application) before anything that imports models. WebSockets:
sandbox status and spawn progress (sandboxes.launcher.consumers).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.local")

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from sandboxes.launcher.consumers import SandboxConsumer  # noqa: E402

websocket_urlpatterns = [
    path("ws/sandboxes/", SandboxConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
