"""PostgreSQL: `credits_post_usage` takes p_partial and says which items were replayed, so that a
single usage charge (`usage_charge`) is the batch's one-item case: paid in full or refused.

Its arguments and result columns change, which CREATE OR REPLACE cannot do: the old signature is
dropped first. See portal/credits/sql/credits_post_usage.sql.
"""

import importlib

from django.db import migrations

from portal.core.migration_ops import VendorSQL
from portal.credits.sql import FunctionsInstall

_0008 = importlib.import_module("portal.credits.migrations.0008_post_debit_in_one_statement")
DROP_OLD = (
    "DROP FUNCTION IF EXISTS credits_post_usage(bigint, varchar, timestamptz, uuid[], varchar[], "
    "jsonb[], bigint[], bigint[]);"
)
DROP_NEW = (
    "DROP FUNCTION IF EXISTS credits_post_usage(bigint, varchar, timestamptz, uuid[], varchar[], "
    "jsonb[], bigint[], bigint[], boolean);"
)


class Migration(migrations.Migration):
    dependencies = [("credits", "0010_ledger_functions_from_files")]

    operations = [
        VendorSQL({"postgresql": DROP_OLD}, {"postgresql": _0008.POST_USAGE}),
        FunctionsInstall({"credits_post_usage": "320f0d9c4f8bb6d9"}, reverse_sql=DROP_NEW),
    ]
