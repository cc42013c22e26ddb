from django.urls import include, path

from . import internal, views

app_name = "launcher"

urlpatterns = [
    path("", views.sandbox_list, name="list"),
    # The live-usage pages are metering's; they keep their /sandboxes/ addresses and their
    # launcher: names (one namespace for the person's sandboxes: templates and the JS link them).
    path("", include("sandboxes.metering.urls")),
    path("<uuid:public_id>/stop/", views.sandbox_stop, name="stop"),
    path("<uuid:public_id>/start/", views.sandbox_start, name="start"),
    path("<uuid:public_id>/delete/", views.sandbox_delete, name="delete"),
]

internal_urlpatterns = [
    path("spawn-spec/", internal.spawn_spec, name="spawn-spec"),
    path("server-stopped/", internal.server_stopped, name="server-stopped"),
]
