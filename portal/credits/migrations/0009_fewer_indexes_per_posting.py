"""Three fewer index entries written per usage charge.

- The idempotency key stays unique, through a named constraint: unique=True also built a second,
  LIKE-only (varchar_pattern_ops) index that no query uses. The constraint comes first, so the
  key is never without a unique index.
- Who posted a transaction is indexed only where someone did (adjustments, revocations).
- An entry's lot is indexed only where it names one: system legs name none.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from portal.core.migration_ops import AppendOnly


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0008_post_debit_in_one_statement"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="ledgertransaction",
            constraint=models.UniqueConstraint(
                fields=("idempotency_key",), name="credits_transaction_idempotency_key"
            ),
        ),
        migrations.AlterField(
            model_name="ledgertransaction",
            name="idempotency_key",
            field=models.CharField(max_length=200),
        ),
        migrations.AlterField(
            model_name="ledgertransaction",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="ledgertransaction",
            index=models.Index(
                condition=models.Q(("created_by__isnull", False)),
                fields=["created_by"],
                name="credits_transaction_by_person",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="grant",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="entries",
                to="credits.creditgrant",
            ),
        ),
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("grant__isnull", False)),
                fields=["grant"],
                name="credits_entry_lot",
            ),
        ),
        # SQLite rebuilt both tables above, without their triggers: make them append-only again.
        AppendOnly("credits_ledgerentry", name="credits_entry_append_only"),
        AppendOnly("credits_ledgertransaction", name="credits_transaction_append_only"),
    ]
