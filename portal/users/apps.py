from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "portal.users"
    label = "users"
    verbose_name = "Users"

    def ready(self) -> None:
        # Receivers for allauth's and Django's authentication signals: they only call services.
        from . import receivers  # noqa: F401, PLC0415 - they import models: apps must be ready
