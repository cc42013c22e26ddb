"""Forms of the programme directory: the list filters and the suspension reason."""

from django import forms
from django.utils.translation import gettext_lazy as _

from portal.onboarding.models import Cohort, University
from portal.organisations.models import Province, Sector
from portal.suspension.services import SUSPENSION_REASON_MAX_LENGTH

from ..selectors.directory import ACTIVE, SUSPENDED

STATUS_CHOICES = [("", _("Any")), (ACTIVE, _("Active")), (SUSPENDED, _("Suspended"))]


class OrganisationFilterForm(forms.Form):
    q = forms.CharField(label=_("Name or CUIN"), required=False, max_length=200)
    sector = forms.ChoiceField(
        label=_("Sector"), required=False, choices=[("", _("Any")), *Sector.choices]
    )
    province = forms.ChoiceField(
        label=_("Province"), required=False, choices=[("", _("Any")), *Province.choices]
    )
    status = forms.ChoiceField(label=_("Status"), required=False, choices=STATUS_CHOICES)
    ordering = forms.ChoiceField(
        label=_("Order by"),
        required=False,
        choices=[
            ("name", _("Name")),
            ("-created", _("Newest first")),
            ("created", _("Oldest first")),
            ("-balance", _("Largest balance")),
            ("balance", _("Smallest balance")),
            ("-granted", _("Most granted")),
            ("-used", _("Most used this month")),
            ("-members", _("Most members")),
            ("-sandboxes", _("Most live sandboxes")),
        ],
    )


class StudentFilterForm(forms.Form):
    q = forms.CharField(label=_("E-mail or name"), required=False, max_length=200)
    university = forms.ModelChoiceField(
        label=_("University"), required=False, queryset=University.objects.order_by("name")
    )
    cohort = forms.ModelChoiceField(
        label=_("Cohort"),
        required=False,
        queryset=Cohort.objects.order_by("-created_at"),
        to_field_name="public_id",
    )
    status = forms.ChoiceField(label=_("Status"), required=False, choices=STATUS_CHOICES)
    ordering = forms.ChoiceField(
        label=_("Order by"),
        required=False,
        choices=[
            ("email", _("E-mail")),
            ("-joined", _("Newest first")),
            ("joined", _("Oldest first")),
            ("-balance", _("Largest balance")),
            ("balance", _("Smallest balance")),
            ("-used", _("Most used this month")),
            ("-sandboxes", _("Most live sandboxes")),
        ],
    )


class SuspensionForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        max_length=SUSPENSION_REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("Recorded in the audit log."),
    )
