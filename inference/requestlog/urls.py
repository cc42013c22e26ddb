from django.urls import path

from . import views

app_name = "request_logging"

urlpatterns = [
    path("<uuid:public_id>/", views.policy_settings, name="settings"),
]
