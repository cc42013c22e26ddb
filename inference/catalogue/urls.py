"""People's model pages, under /models/: the catalogue they may call, the playground, and one
model's page. `playground/` comes before the model names (no model may be named like it)."""

from django.urls import path

from . import views

app_name = "models"

urlpatterns = [
    path("", views.catalogue, name="list"),
    path("playground/", views.playground, name="playground"),
    path("<str:name>/", views.model_detail, name="detail"),
]
