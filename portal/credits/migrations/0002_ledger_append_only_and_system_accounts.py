"""The ledger refuses UPDATE and DELETE in the database; the programme's accounts exist."""

from django.db import migrations

from portal.core.migration_ops import AppendOnly

SYSTEM_ACCOUNTS = ["grants_issued", "usage", "expired", "adjustments"]


def create_system_accounts(apps, schema_editor):
    CreditAccount = apps.get_model("credits", "CreditAccount")
    for code in SYSTEM_ACCOUNTS:
        CreditAccount.objects.get_or_create(
            system_code=code, defaults={"kind": "system", "balance": None}
        )


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_initial")]

    operations = [
        AppendOnly("credits_ledgerentry", name="credits_entry_append_only"),
        AppendOnly("credits_ledgertransaction", name="credits_transaction_append_only"),
        migrations.RunPython(create_system_accounts, migrations.RunPython.noop),
    ]
