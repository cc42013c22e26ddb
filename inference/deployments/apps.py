from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "inference.deployments"
    label = "llm_deployments"
    verbose_name = "Models: deployments"
