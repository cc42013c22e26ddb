"""Credits are integers: the unit is the credit-second (one GPU for one second).

People read GPU-hours; money is PKR at each grant's own rate. Conversions live here and only
here, in Decimal, so no float ever touches a balance.
"""

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from django.utils import timezone

from portal.core.dates import YEARS

SECONDS_PER_HOUR = 3600
PKR_QUANTUM = Decimal("0.01")
GPU_HOURS_QUANTUM = Decimal("0.01")


def gpu_hours_to_credit_seconds(gpu_hours: int | Decimal) -> int:
    """Whole credit-seconds for an amount of GPU-hours (rounded half up to the second)."""
    seconds = (Decimal(gpu_hours) * SECONDS_PER_HOUR).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(seconds)


def credit_seconds_to_gpu_hours(credit_seconds: int) -> Decimal:
    """Exact GPU-hours (a Decimal with as many places as it needs)."""
    return Decimal(credit_seconds) / SECONDS_PER_HOUR


def credit_seconds_to_pkr(credit_seconds: int, rate_pkr_per_gpu_hour: Decimal) -> Decimal:
    """Exact PKR value of credit-seconds at a grant's rate; round only for display."""
    return Decimal(credit_seconds) * Decimal(rate_pkr_per_gpu_hour) / SECONDS_PER_HOUR


def display_gpu_hours(credit_seconds: int) -> Decimal:
    return credit_seconds_to_gpu_hours(credit_seconds).quantize(
        GPU_HOURS_QUANTUM, rounding=ROUND_HALF_UP
    )


def display_pkr(amount: Decimal) -> Decimal:
    return Decimal(amount).quantize(PKR_QUANTUM, rounding=ROUND_HALF_UP)


def month_bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The first instant of the month and of the next one, in Pakistan time: statements and
    allowances count months as people there do."""
    tz = timezone.get_default_timezone()
    start = dt.datetime(month.year, month.month, 1, tzinfo=tz)
    following = dt.datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=tz)
    return start, following


def month_next(month: dt.date) -> dt.date:
    """The first day of the month after the one `month` is in."""
    return (month.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def months_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """The first days of the months from the one `first` is in to `last`'s, in order."""
    months, cursor = [], first.replace(day=1)
    while cursor <= last:
        months.append(cursor)
        cursor = month_next(cursor)
    return months


def month_parse(value: str) -> dt.date | None:
    """The first day of a "YYYY-MM" month within the portal's years, or None."""
    try:
        month = dt.datetime.strptime(value, "%Y-%m").date()  # noqa: DTZ007 - a calendar month
    except ValueError:
        return None
    return month if YEARS[0] <= month.year <= YEARS[1] else None


def day_end(day: dt.date) -> dt.datetime:
    """The end of a calendar day in Pakistan time (the first instant of the next day): an
    expiry "on" a date lasts the whole of that day."""
    following = day + dt.timedelta(days=1)
    return dt.datetime(
        following.year, following.month, following.day, tzinfo=timezone.get_default_timezone()
    )
