"""The live-usage pages (views.py), included by the launcher's urls.py under /sandboxes/ and its
`launcher` namespace: launcher:detail and launcher:organisation_live, as before they moved."""

from django.urls import path

from . import views

urlpatterns = [
    path("<uuid:public_id>/", views.sandbox_detail, name="detail"),
    path("organisations/<uuid:public_id>/", views.organisation_live, name="organisation_live"),
]
