"""What the programme pages count the same way: the holders' roll-ups, GPU time used in a month,
holders counted, when the programme's figures were last refreshed, and the local days and months
they are cut by.

Credits are the ledger's, read from its roll-ups (`credits.models`): an AccountRollup is one
holder account's entries of one local day or month (Pakistan time, as `credits.units.month_bounds`
cuts months) per transaction kind and lot rate, written with the postings; a ProgrammeRollup is
the same summed over the programme per report dimension, rebuilt from the accounts' roll-ups every
minute or so. A page reads a few of those rows, never the entries, so its cost does not grow with
the ledger. Only holder accounts (organisations' and students') have roll-ups: the system accounts
are the other side of the same transactions and would count everything twice.
"""

import datetime as dt

from django.db.models import BigIntegerField, Count, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.credits.models import (
    AccountRollup,
    CreditAccount,
    LedgerTransaction,
    ProgrammeRollupRefresh,
    RollupPeriod,
)

K = LedgerTransaction.Kind


def local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=timezone.get_default_timezone())


def this_month() -> dt.date:
    return timezone.localdate().replace(day=1)


def month_rollups(month_from: dt.date, month_to: dt.date):
    """The accounts' month roll-ups from `month_from` to `month_to` (first days, inclusive)."""
    return AccountRollup.objects.filter(
        period=RollupPeriod.MONTH, starts__gte=month_from, starts__lte=month_to
    )


def used_in_month(account_ref: str, month: dt.date) -> Coalesce:
    """GPU time charged to the outer row's credit account (`account_ref`, an OuterRef path to
    its id) in the local month starting `month`, as a positive number of credit-seconds: the
    account's usage roll-ups of the month (one per lot rate, on their unique key), 0 without."""
    rollups = AccountRollup.objects.filter(
        account_id=OuterRef(account_ref), period=RollupPeriod.MONTH, starts=month, kind=K.USAGE
    )
    used = rollups.order_by().values("account_id").annotate(used=-Sum("amount")).values("used")
    return Coalesce(Subquery(used[:1], output_field=BigIntegerField()), Value(0))


def holders_counted(account: str) -> dict:
    """Aggregates counting the distinct organisations' and students' accounts named by the
    relation `account` (as `organisations` and `students`)."""
    kinds = {
        "organisations": CreditAccount.Kind.ORGANISATION,
        "students": CreditAccount.Kind.STUDENT,
    }
    return {
        name: Count(account, distinct=True, filter=Q(**{f"{account}__kind": kind}))
        for name, kind in kinds.items()
    }


def refreshed_at_subquery(*, month: dt.date) -> Subquery:
    """When the programme's roll-ups of the month were last rebuilt from the accounts', as an
    expression to read with them: what a page that reads the current month's prints as "as
    of" (a closed month's are final). NULL before the first refresh."""
    refreshes = ProgrammeRollupRefresh.objects.filter(period=RollupPeriod.MONTH, starts=month)
    return Subquery(refreshes.values("refreshed_at")[:1])
