"""Ledger entries carry their transaction's kind, and the roll-up tables exist.

`LedgerEntry.kind` is a copy of `LedgerTransaction.kind`: filled in here for the entries already
written (the one UPDATE the append-only ledger ever allows: its trigger is held off for it, inside
this migration's transaction), and written with every new entry by the ledger's functions
(installed again below, with the kind) and the ORM path of credits.posting.

AccountRollup, ProgrammeRollup and ProgrammeRollupRefresh start empty; the next migration makes
the ledger's functions write the accounts' roll-ups and fills them from the entries.
`credits_apply_postings` takes the kind as a new argument, so its old signature is dropped first.
"""

from django.db import migrations, models

from portal.core.migration_ops import AppendOnly, VendorSQL
from portal.credits.sql import FunctionsInstall

KINDS = [
    ("grant", "Grant"),
    ("allowance", "Student allowance"),
    ("usage", "Usage"),
    ("expiry", "Expiry"),
    ("revocation", "Revocation"),
    ("adjustment", "Adjustment"),
]
PERIODS = [("day", "Day"), ("month", "Month")]

BACKFILL_POSTGRESQL = """
ALTER TABLE credits_ledgerentry DISABLE TRIGGER credits_entry_append_only;
UPDATE credits_ledgerentry e SET kind = t.kind
FROM credits_ledgertransaction t WHERE t.id = e.transaction_id;
ALTER TABLE credits_ledgerentry ENABLE TRIGGER credits_entry_append_only;
"""
# SQLite rebuilt the table to add the column, without its trigger (AppendOnly puts it back).
BACKFILL_SQLITE = """
UPDATE credits_ledgerentry SET kind = (
    SELECT t.kind FROM credits_ledgertransaction t WHERE t.id = credits_ledgerentry.transaction_id
)
"""
DROP_OLD_APPLY = (
    "DROP FUNCTION IF EXISTS credits_apply_postings(bigint, timestamptz, bigint[], bigint[], "
    "bigint[], boolean[]);"
)


class Migration(migrations.Migration):
    dependencies = [("credits", "0011_usage_batch_refuses_or_takes_what_is_left")]

    operations = [
        migrations.AddField(
            model_name="ledgerentry",
            name="kind",
            field=models.CharField(choices=KINDS, default="", max_length=16),
            preserve_default=False,
        ),
        VendorSQL(
            {
                "postgresql": BACKFILL_POSTGRESQL,
                "sqlite": "DROP TRIGGER IF EXISTS credits_entry_append_only_no_update",
            },
            {},
        ),
        VendorSQL({"sqlite": BACKFILL_SQLITE}, {}),
        AppendOnly("credits_ledgerentry", name="credits_entry_append_only"),
        migrations.AddConstraint(
            model_name="ledgerentry",
            constraint=models.CheckConstraint(
                condition=~models.Q(kind=""), name="credits_entry_kind_given"
            ),
        ),
        # SQLite rebuilds the table for a constraint too.
        AppendOnly("credits_ledgerentry", name="credits_entry_append_only"),
        VendorSQL({"postgresql": DROP_OLD_APPLY}, {}),
        FunctionsInstall(
            {
                "credits_apply_postings": "9f88c29e985483c6",
                "credits_post": "9c91190dd2890725",
                "credits_post_debit": "a75843f31f665fa8",
            }
        ),
        migrations.CreateModel(
            name="AccountRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("period", models.CharField(choices=PERIODS, max_length=8)),
                ("starts", models.DateField(verbose_name="first local day")),
                ("kind", models.CharField(choices=KINDS, max_length=16)),
                (
                    "rate_pkr_per_gpu_hour",
                    models.DecimalField(
                        decimal_places=2, max_digits=12, verbose_name="PKR per GPU-hour"
                    ),
                ),
                ("amount", models.BigIntegerField(verbose_name="signed sum (credit-seconds)")),
                ("entries", models.BigIntegerField(verbose_name="entries summed")),
                (
                    "account",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.PROTECT,
                        related_name="rollups",
                        to="credits.creditaccount",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["period", "starts", "kind", "amount"], name="credits_rollup_sort"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("account", "period", "starts", "kind", "rate_pkr_per_gpu_hour"),
                        name="credits_rollup_account_key",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ProgrammeRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("period", models.CharField(choices=PERIODS, max_length=8)),
                ("starts", models.DateField(verbose_name="first local day")),
                (
                    "dimension",
                    models.CharField(
                        choices=[
                            ("programme", "Whole programme"),
                            ("sector", "Sector"),
                            ("province", "Province"),
                            ("university", "University"),
                            ("cohort", "Cohort"),
                        ],
                        max_length=16,
                    ),
                ),
                ("key", models.CharField(blank=True, max_length=200)),
                (
                    "holder_kind",
                    models.CharField(
                        choices=[
                            ("organisation", "Organisation"),
                            ("student", "Student"),
                            ("system", "System"),
                        ],
                        max_length=16,
                    ),
                ),
                ("kind", models.CharField(choices=KINDS, max_length=16)),
                (
                    "rate_pkr_per_gpu_hour",
                    models.DecimalField(
                        decimal_places=2, max_digits=12, verbose_name="PKR per GPU-hour"
                    ),
                ),
                ("amount", models.BigIntegerField(verbose_name="signed sum (credit-seconds)")),
                ("entries", models.BigIntegerField(verbose_name="entries summed")),
                ("holders", models.PositiveIntegerField(verbose_name="holder accounts")),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=(
                            "period",
                            "dimension",
                            "starts",
                            "key",
                            "holder_kind",
                            "kind",
                            "rate_pkr_per_gpu_hour",
                        ),
                        name="credits_programme_rollup_key",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ProgrammeRollupRefresh",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("period", models.CharField(choices=PERIODS, max_length=8)),
                ("starts", models.DateField(verbose_name="first local day")),
                ("refreshed_at", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("period", "starts"), name="credits_programme_rollup_refresh_key"
                    )
                ],
            },
        ),
    ]
