"""The organisation's choice: keep nothing (the default), or keep content for N days."""

from django import forms
from django.utils.translation import gettext_lazy as _

RETENTION_CHOICES = [
    (0, _("Keep nothing (the default)")),
    (1, _("Keep for 1 day")),
    (7, _("Keep for 7 days")),
    (30, _("Keep for 30 days")),
    (90, _("Keep for 90 days")),
]


class RequestLogPolicyForm(forms.Form):
    retention_days = forms.TypedChoiceField(
        label=_("Request logging"),
        choices=RETENTION_CHOICES,
        coerce=int,
        widget=forms.RadioSelect,
    )
