from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CreditsConfig(AppConfig):
    name = "portal.credits"
    label = "credits"
    verbose_name = "GPU credits"

    def ready(self) -> None:
        from .services import system_accounts_forget  # noqa: PLC0415 - models: apps must be ready

        # A flushed or re-migrated database (the test runner does both) has new system
        # accounts: forget the ones this process remembered.
        post_migrate.connect(system_accounts_forget, dispatch_uid="credits-system-accounts")
