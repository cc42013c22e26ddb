"""The audit log's filters (the page and its export share them)."""

from django import forms
from django.utils.translation import gettext_lazy as _

from portal.audit.actions import AuditAction


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label=_("Actor e-mail"), required=False, max_length=254)
    action = forms.ChoiceField(label=_("Action"), required=False, choices=())
    target = forms.CharField(label=_("Target"), required=False, max_length=200)
    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, actions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [
            ("", _("Any")),
            *[(action, AuditAction.label_of(action)) for action in actions],
        ]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end date is before the start date."))
        return cleaned
