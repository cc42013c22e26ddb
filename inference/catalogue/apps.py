from django.apps import AppConfig


class CatalogueConfig(AppConfig):
    name = "inference.catalogue"
    label = "llm_catalogue"
    verbose_name = "Models: catalogue"
