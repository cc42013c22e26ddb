"""`manage.py models_prepare [--force]`: write the starter models (tiny-chat, minilm-embed) into
the model store, settings.MODEL_STORE_DIR. Nothing is downloaded: the tiny model is generated
from a seed, MiniLM converted from the weights an installed package ships. Idempotent: a model
already in the store is left alone unless --force. `make run` runs it before seed_demo.
"""

from django.core.management.base import BaseCommand, CommandError

from inference.catalogue.starter_models import starter_models_prepare
from inference.catalogue.store import store_root


class Command(BaseCommand):
    help = "Write the starter models into the model store (MODEL_STORE_DIR); idempotent."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force", action="store_true", help="Rewrite models already in the store."
        )

    def handle(self, *args, force: bool = False, **options):
        root = store_root()
        root.mkdir(parents=True, exist_ok=True)
        try:
            done = starter_models_prepare(store_dir=root, force=force)
        except (OSError, ValueError) as error:
            raise CommandError(f"The starter models could not be written: {error}") from error
        for path, written in done:
            verb = "wrote" if written else "already there:"
            self.stdout.write(f"models_prepare: {verb} {path} ({path.stat().st_size:,} bytes)")
