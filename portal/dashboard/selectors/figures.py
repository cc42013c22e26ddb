"""What the programme pages count the same way: the holders' ledger entries, GPU time used in a
window, holders counted, and the local days and months they are cut by.

Credits are the ledger's: entries on holder accounts (organisations' and students'), in the
month as `credits.units.month_bounds` draws it (Pakistan time), so they match statements.
"""

import datetime as dt

from django.db.models import BigIntegerField, Count, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from portal.credits.models import CreditAccount, LedgerEntry, LedgerTransaction

K = LedgerTransaction.Kind
HOLDER_KINDS = [CreditAccount.Kind.ORGANISATION, CreditAccount.Kind.STUDENT]


def local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=timezone.get_default_timezone())


def this_month() -> dt.date:
    return timezone.localdate().replace(day=1)


def holder_entries(start: dt.datetime, end: dt.datetime) -> QuerySet[LedgerEntry]:
    """Ledger entries of organisations' and students' accounts in [start, end): the system
    accounts are the other side of the same transactions and would count everything twice."""
    return LedgerEntry.objects.filter(
        account__kind__in=HOLDER_KINDS, created_at__gte=start, created_at__lt=end
    )


def used_between(account_ref: str, start: dt.datetime, end: dt.datetime | None = None) -> Coalesce:
    """GPU time charged to the outer row's credit account (`account_ref`, an OuterRef path to
    its id) from `start` to `end` (open-ended without one), as a positive number of
    credit-seconds: a correlated sum on the (account, created_at) index, 0 without any."""
    entries = LedgerEntry.objects.filter(
        account_id=OuterRef(account_ref), created_at__gte=start, transaction__kind=K.USAGE
    )
    if end is not None:
        entries = entries.filter(created_at__lt=end)
    used = entries.order_by().values("account_id").annotate(used=-Sum("amount")).values("used")
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
