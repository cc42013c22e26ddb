"""Serializer fields with the bounds the portal's data can have."""

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from portal.core.dates import YEARS


class BoundedDateTimeField(serializers.DateTimeField):
    """A date-time between the years 2000 and 2999.

    DRF's own field crashes (OverflowError, a 500) on dates at the ends of the calendar when it
    moves them between time zones; nothing in the portal's books lies there anyway.
    """

    default_error_messages = {
        "out_of_range": _("Use a date between the years %(first)s and %(last)s.")
        % {"first": YEARS[0], "last": YEARS[1]}
    }

    def enforce_timezone(self, value):
        if not YEARS[0] <= value.year <= YEARS[1]:
            self.fail("out_of_range")
        return super().enforce_timezone(value)
