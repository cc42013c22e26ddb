from django.apps import AppConfig


class LauncherConfig(AppConfig):
    name = "sandboxes.launcher"
    label = "launcher"
    verbose_name = "Sandboxes"

    def ready(self) -> None:
        # Membership changes and sign-outs, by signal; the receivers import models.
        from . import receivers  # noqa: F401, PLC0415 - apps must be ready
