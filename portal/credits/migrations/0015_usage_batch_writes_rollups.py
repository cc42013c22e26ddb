"""PostgreSQL: the set-based part of `credits_post_usage` adds its holder legs to the accounts'
roll-ups (`credits_rollup_add`, as credits_post_debit does for the items it posts one by one).
Same arguments and result columns. See portal/credits/sql/credits_post_usage.sql.
"""

from django.db import migrations

from portal.credits.sql import FunctionsInstall


class Migration(migrations.Migration):
    dependencies = [("credits", "0014_rollups_written_with_postings")]

    operations = [FunctionsInstall({"credits_post_usage": "b852d2abcff8be19"})]
