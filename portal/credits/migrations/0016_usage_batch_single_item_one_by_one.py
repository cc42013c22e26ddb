"""PostgreSQL: a single usage charge (usage_charge) goes one by one through credits_post_debit
again, which holds a busy account's lock for less than the set-based batch; batches of two or
more items stay set-based. See portal/credits/sql/credits_post_usage.sql.
"""

from django.db import migrations

from portal.credits.sql import FunctionsInstall


class Migration(migrations.Migration):
    dependencies = [("credits", "0015_usage_batch_writes_rollups")]

    operations = [FunctionsInstall({"credits_post_usage": "5e3d7e282bd3a890"})]
