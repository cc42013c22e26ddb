from django import template
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key)


@register.filter
def runway(seconds: int) -> str:
    """A runway as people read it: '3 h 20 min', '45 min', or 'none'."""
    minutes = int(seconds or 0) // 60
    if minutes <= 0:
        return _("none")
    hours, minutes = divmod(minutes, 60)
    if hours >= 48:
        return _("%(days)s days") % {"days": hours // 24}
    if hours:
        return _("%(h)s h %(m)s min") % {"h": hours, "m": minutes}
    return _("%(m)s min") % {"m": minutes}


@register.filter
def filesizeformat_mib(mib: int) -> str:
    return _("%(n)s GiB") % {"n": f"{mib / 1024:g}"} if mib >= 1024 else _("%(n)s MiB") % {"n": mib}
