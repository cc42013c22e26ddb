"""The reports' one form: a dimension and a range of whole months."""

import datetime as dt

from django import forms
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _

from portal.core.dates import YEARS
from portal.credits.units import month_parse, months_between

from ..selectors.reports import MAX_MONTHS, Dimension

MAX_PAGE = 100_000  # beyond any programme's pages: a bigger number is a typing error


class MonthField(forms.Field):
    """A calendar month written YYYY-MM (what <input type="month"> sends), as its first day."""

    widget = forms.TextInput(attrs={"type": "month", "placeholder": "YYYY-MM"})
    default_error_messages = {
        "invalid": _("Enter a month as YYYY-MM, between %(first)s and %(last)s."),
    }

    def to_python(self, value) -> dt.date | None:
        if value in self.empty_values:
            return None
        value = str(value).strip()
        month = month_parse(value) if len(value) == 7 else None
        if month is None:
            raise forms.ValidationError(
                self.error_messages["invalid"],
                code="invalid",
                params={"first": YEARS[0], "last": YEARS[1]},
            )
        return month

    def prepare_value(self, value):
        return f"{value:%Y-%m}" if isinstance(value, dt.date) else value


class ReportForm(forms.Form):
    dimension = forms.ChoiceField(label=_("Report by"), choices=Dimension.choices)
    month_from = MonthField(label=_("From month"))
    month_to = MonthField(label=_("To month"))
    # Which page of rows the screen shows (the links write it; the exports ignore it).
    page = forms.IntegerField(
        min_value=1,
        max_value=MAX_PAGE,
        required=False,
        widget=forms.HiddenInput,
        error_messages={
            "invalid": _("A page is a whole number from 1."),
            "min_value": _("A page is a whole number from 1."),
            "max_value": _("A page is a whole number from 1."),
        },
    )

    @classmethod
    def from_query(cls, query) -> "ReportForm":
        """Bound to the query string; with none of its fields there, to the last twelve months
        by month (the page's first view). Either way it must validate before anything is read."""
        if not any(name in query for name in cls.base_fields):
            this_month = timezone.localdate().replace(day=1)
            first = this_month
            for _step in range(11):
                first = (first - dt.timedelta(days=1)).replace(day=1)
            query = {
                "dimension": Dimension.MONTH,
                "month_from": f"{first:%Y-%m}",
                "month_to": f"{this_month:%Y-%m}",
            }
        return cls(query)

    def clean(self):
        cleaned = super().clean()
        if self.has_error("page"):  # a hidden field: its error is shown above the form
            self.add_error(None, list(self.errors["page"]))
        start, end = cleaned.get("month_from"), cleaned.get("month_to")
        if start and end:
            if start > end:
                self.add_error("month_to", _("The last month is before the first."))
            elif len(months_between(start, end)) > MAX_MONTHS:
                self.add_error(
                    "month_to",
                    _("A report covers at most %(count)d months.") % {"count": MAX_MONTHS},
                )
        return cleaned

    def query(self) -> str:
        """The validated choice as a query string, for the export and page links (without the
        page)."""
        data = self.cleaned_data
        return urlencode(
            {
                "dimension": data["dimension"],
                "month_from": f"{data['month_from']:%Y-%m}",
                "month_to": f"{data['month_to']:%Y-%m}",
            }
        )
