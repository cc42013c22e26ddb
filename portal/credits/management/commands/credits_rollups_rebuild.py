"""`manage.py credits_rollups_rebuild`: the ledger's roll-ups again from its entries.

Accounts' roll-ups first (set-based on PostgreSQL, a range of accounts at a time, each under its
accounts' row locks, so it can run while the portal posts), then every month's programme
roll-ups from them. Idempotent: a second run finds nothing to change. For an operator after the
nightly reconciliation audited a drift, or after restoring a database.
"""

from django.core.management.base import BaseCommand

from portal.credits.services import rollups_rebuild


class Command(BaseCommand):
    help = "Recompute the credit roll-ups from the ledger entries (idempotent)."

    def handle(self, *args, **options):
        changed, months = rollups_rebuild()
        span = f"{months[0]:%Y-%m} to {months[-1]:%Y-%m}" if months else "no month"
        self.stdout.write(
            f"Account roll-ups: {changed} rows written or removed. "
            f"Programme roll-ups refreshed: {span}."
        )
