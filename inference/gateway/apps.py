from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "inference.gateway"
    label = "llm_gateway"
    verbose_name = "Models: gateway"

    def ready(self) -> None:
        from . import receivers  # noqa: F401, PLC0415 - registered by being imported
