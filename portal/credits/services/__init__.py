"""The credits app's writes, one module per part: `ledger` (accounts and `ledger_post`),
`grants` (lots: issue, revoke, expire, adjust), `usage` (`usage_charge_batch`, `usage_charge`),
`warnings` (low balances), `rollups` (the ledger's roll-ups recomputed, refreshed, reconciled),
and `applications` (the credit application workflow, one service per transition). Ledger rows
are written only by the posting module, through two doors: `ledger_post` and
`usage_charge_batch`.

The names below are the books' interface: import them from here. The workflow is imported as a
module (`from portal.credits.services import applications`).
"""

from .grants import (
    adjustment_post,
    grant_expire,
    grant_issue,
    grant_revoke,
    grants_expire_due,
)
from .ledger import (
    MAX_AMOUNT,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
    Posting,
    account_for_organisation,
    account_for_student,
    decision_conflict_refuse,
    ledger_post,
    system_account,
    system_accounts_forget,
)
from .rollups import (
    account_rollups_rebuild,
    account_rollups_reconcile,
    rollups_rebuild,
    rollups_refresh,
    rollups_refresh_mark_clear,
    rollups_refresh_soon,
)
from .usage import UsageCharged, UsageDue, usage_charge, usage_charge_batch
from .warnings import warnings_check

__all__ = [
    "MAX_AMOUNT",
    "IdempotencyConflict",
    "InsufficientCredits",
    "LedgerError",
    "Posting",
    "UsageCharged",
    "UsageDue",
    "account_for_organisation",
    "account_for_student",
    "account_rollups_rebuild",
    "account_rollups_reconcile",
    "adjustment_post",
    "decision_conflict_refuse",
    "grant_expire",
    "grant_issue",
    "grant_revoke",
    "grants_expire_due",
    "ledger_post",
    "rollups_rebuild",
    "rollups_refresh",
    "rollups_refresh_mark_clear",
    "rollups_refresh_soon",
    "system_account",
    "system_accounts_forget",
    "usage_charge",
    "usage_charge_batch",
    "warnings_check",
]
