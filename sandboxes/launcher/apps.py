from django.apps import AppConfig


class LauncherConfig(AppConfig):
    name = "sandboxes.launcher"
    label = "launcher"
    verbose_name = "Sandboxes"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - membership changes and sign-outs, by signal
