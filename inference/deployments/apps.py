from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "inference.deployments"
    label = "llm_deployments"
    verbose_name = "Models: deployments"

    def ready(self) -> None:
        # Devices released by the allocator move the replicas' line; the receivers import models.
        from . import receivers  # noqa: F401, PLC0415 - apps must be ready
