"""The accounts' roll-ups are written with the postings, and filled in from the entries so far.

PostgreSQL: `credits_local_day` cuts instants into local days; `credits_rollup_add` adds holder
legs to their accounts' roll-ups; `credits_apply_postings` and `credits_post_debit` call it for
every holder leg they write, in the posting's transaction. Elsewhere credits.posting does the same
through the ORM. Then every account's roll-ups are summed from its entries (the same sums as
`manage.py credits_rollups_rebuild`). The programme roll-ups are built by the first refresh
(on beat, or `credits_rollups_rebuild`).
"""

from collections import defaultdict

from django.db import migrations
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from portal.core.migration_ops import VendorSQL
from portal.credits.sql import FunctionsInstall

FILL_POSTGRESQL = """
INSERT INTO credits_accountrollup
    (account_id, period, starts, kind, rate_pkr_per_gpu_hour, amount, entries)
SELECT e.account_id, p.period, p.starts, e.kind, g.rate_pkr_per_gpu_hour, sum(e.amount), count(*)
FROM credits_ledgerentry e
JOIN credits_creditaccount a ON a.id = e.account_id AND a.kind <> 'system'
JOIN credits_creditgrant g ON g.id = e.grant_id
CROSS JOIN LATERAL (SELECT credits_local_day(e.created_at) AS day) AS d
CROSS JOIN LATERAL (
    VALUES ('day', d.day), ('month', d.day - (extract(day FROM d.day)::integer - 1))
) AS p(period, starts)
GROUP BY e.account_id, p.period, p.starts, e.kind, g.rate_pkr_per_gpu_hour
"""


def fill_elsewhere(apps, schema_editor):
    """SQLite (the embedded default, a small ledger): the same sums through the ORM."""
    if schema_editor.connection.vendor == "postgresql":
        return
    LedgerEntry = apps.get_model("credits", "LedgerEntry")
    AccountRollup = apps.get_model("credits", "AccountRollup")
    daily = (
        LedgerEntry.objects.exclude(account__kind="system")
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_default_timezone()))
        .values("account_id", "day", "kind", "grant__rate_pkr_per_gpu_hour")
        .annotate(amount=Sum("amount"), entries=Count("pk"))
        .order_by()
    )
    sums = defaultdict(lambda: [0, 0])
    for row in daily:
        day = row["day"]
        for period, starts in (("day", day), ("month", day.replace(day=1))):
            key = (
                row["account_id"],
                period,
                starts,
                row["kind"],
                row["grant__rate_pkr_per_gpu_hour"],
            )
            sums[key][0] += row["amount"]
            sums[key][1] += row["entries"]
    AccountRollup.objects.bulk_create(
        AccountRollup(
            account_id=account_id,
            period=period,
            starts=starts,
            kind=kind,
            rate_pkr_per_gpu_hour=rate,
            amount=amount,
            entries=entries,
        )
        for (account_id, period, starts, kind, rate), (amount, entries) in sums.items()
    )


class Migration(migrations.Migration):
    dependencies = [("credits", "0013_usage_batch_set_based")]

    operations = [
        FunctionsInstall(
            {
                "credits_local_day": "75d68af4d3658966",
                "credits_rollup_add": "8a67921d1991608e",
                "credits_apply_postings": "03a62c0ee3c61217",
                "credits_post_debit": "1ff920bb81bf2a39",
            },
            reverse_sql=(
                "DROP FUNCTION IF EXISTS credits_rollup_add(varchar, timestamptz, bigint[], "
                "numeric[], bigint[]); DROP FUNCTION IF EXISTS credits_local_day(timestamptz);"
            ),
        ),
        VendorSQL(
            {"postgresql": FILL_POSTGRESQL}, {"postgresql": "DELETE FROM credits_accountrollup"}
        ),
        migrations.RunPython(fill_elsewhere, migrations.RunPython.noop),
    ]
