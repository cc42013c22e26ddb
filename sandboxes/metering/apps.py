from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "sandboxes.metering"
    label = "metering"
    verbose_name = "Usage metering"
