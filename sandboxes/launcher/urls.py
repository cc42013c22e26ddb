from django.urls import path

from . import internal, views

app_name = "launcher"

urlpatterns = [
    path("", views.sandbox_list, name="list"),
    path("<uuid:public_id>/", views.sandbox_detail, name="detail"),
    path("organisations/<uuid:public_id>/", views.organisation_live, name="organisation_live"),
    path("<uuid:public_id>/stop/", views.sandbox_stop, name="stop"),
    path("<uuid:public_id>/start/", views.sandbox_start, name="start"),
    path("<uuid:public_id>/delete/", views.sandbox_delete, name="delete"),
]

internal_urlpatterns = [
    path("spawn-spec/", internal.spawn_spec, name="spawn-spec"),
    path("server-stopped/", internal.server_stopped, name="server-stopped"),
]
