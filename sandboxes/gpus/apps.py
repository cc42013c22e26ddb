from django.apps import AppConfig


class GpusConfig(AppConfig):
    name = "sandboxes.gpus"
    label = "gpus"
    verbose_name = "GPU inventory"
