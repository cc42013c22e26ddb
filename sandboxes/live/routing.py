"""The live WebSocket routes. The stream is chosen by the route: a person's own, an
organisation's, or the cluster's (programme managers)."""

from django.urls import path

from .consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi(), {"stream": "user"}),
    # The sandbox list page's address from before the live package; the same stream.
    path("ws/sandboxes/", LiveConsumer.as_asgi(), {"stream": "user"}),
    path(
        "ws/live/organisation/<uuid:public_id>/",
        LiveConsumer.as_asgi(),
        {"stream": "organisation"},
    ),
    path("ws/live/cluster/", LiveConsumer.as_asgi(), {"stream": "cluster"}),
]
