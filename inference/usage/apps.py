from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "inference.usage"
    label = "llm_usage"
    verbose_name = "Models: usage"
