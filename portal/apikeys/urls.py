from django.urls import path

from . import reconfirm, views

app_name = "apikeys"

urlpatterns = [
    path("", views.apikey_list, name="list"),
    path("<uuid:public_id>/revoke/", views.apikey_revoke, name="revoke"),
    path("<uuid:public_id>/reconfirm/", reconfirm.apikey_reconfirm, name="reconfirm"),
]
