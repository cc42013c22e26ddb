"""PostgreSQL: the ledger's functions are read from their files in portal/credits/sql/ from now on.

The files hold the definitions that migrations 0003 (credits_apply_postings), 0004
(credits_post) and 0008 (credits_post_debit, and credits_post_usage as 0008 rewrote 0007's)
made, so on a database that ran those this changes nothing. Those migrations stay as history;
a later change to a file is installed by a migration of its own (see portal/credits/sql).
"""

from django.db import migrations

from portal.credits.sql import FunctionsInstall


class Migration(migrations.Migration):
    dependencies = [("credits", "0009_fewer_indexes_per_posting")]

    # Nothing to undo: before this migration the functions were already these.
    operations = [
        FunctionsInstall(
            {
                "credits_apply_postings": "430216ef7935c523",
                "credits_post": "4dfd68a327010556",
                "credits_post_debit": "747799d77ccaef96",
                "credits_post_usage": "be97f8fa3e2e4c3f",
            }
        )
    ]
