"""PostgreSQL: `credits_post_usage` posts the items whose accounts can pay for all of them
set-based (one INSERT of their transactions, one UPDATE of the balances, one of the lots, one
INSERT of the entries) and only the others one by one through credits_post_debit. Same
arguments and result columns. See portal/credits/sql/credits_post_usage.sql.
"""

from django.db import migrations

from portal.credits.sql import FunctionsInstall


class Migration(migrations.Migration):
    dependencies = [("credits", "0012_ledger_entry_kind_and_rollups")]

    operations = [FunctionsInstall({"credits_post_usage": "9536adaf556535d8"})]
