from django.apps import AppConfig


class ApiKeysConfig(AppConfig):
    name = "portal.apikeys"
    label = "apikeys"
    verbose_name = "API keys"

    def ready(self) -> None:
        # Receivers connect, and the schema extension registers, once the apps are ready.
        from . import (  # noqa: F401, PLC0415 - registered by being imported
            receivers,  # membership changes
            schema,  # the OpenAPI description of key auth
        )
