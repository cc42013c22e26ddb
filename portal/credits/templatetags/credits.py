"""Display of credit amounts: credit-seconds as GPU-hours, Decimal PKR with two places."""

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma

from portal.credits.units import display_gpu_hours, display_pkr

register = template.Library()


@register.filter
def gpu_hours(credit_seconds) -> str:
    """12 345 678 credit-seconds → "3,429.36"."""
    if credit_seconds in (None, ""):
        return "—"
    return intcomma(display_gpu_hours(int(credit_seconds)))


@register.filter
def pkr(amount) -> str:
    if amount in (None, ""):
        return "—"
    return intcomma(display_pkr(amount))


@register.filter
def percent_of(part, whole) -> int:
    return 0 if not whole else round(100 * int(part) / int(whole))
