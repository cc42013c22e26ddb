from django.apps import AppConfig


class LauncherConfig(AppConfig):
    name = "sandboxes.launcher"
    label = "launcher"
    verbose_name = "Sandboxes"
