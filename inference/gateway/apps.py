from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "inference.gateway"
    label = "llm_gateway"
    verbose_name = "Models: gateway"
