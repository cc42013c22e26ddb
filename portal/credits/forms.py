"""Forms for applications, reviews and corrections. Shapes here; rules in the services."""

import datetime as dt
import uuid
from decimal import Decimal

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.organisations.models import Sector
from portal.users.models import User

from .models import ApplicationState, CreditApplication
from .units import day_end

MAX_GPU_HOURS = 1_000_000


class ApplicationForm(forms.ModelForm):
    team_members = forms.ModelMultipleChoiceField(
        label=_("Team members involved"),
        queryset=User.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = CreditApplication
        fields = [
            "title",
            "summary",
            "sector",
            "requested_gpu_hours",
            "gpu_class",
            "duration_months",
            "data_sensitivity",
            "team_members",
        ]
        widgets = {"summary": forms.Textarea(attrs={"rows": 6})}
        help_texts = {
            "summary": _("What you will train or run, on what data, and what it is for."),
            "requested_gpu_hours": _("One GPU for one hour is one GPU-hour."),
        }

    def __init__(self, *args, organisation, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team_members"].queryset = User.objects.filter(
            memberships__organisation=organisation
        ).order_by("email")
        self.fields["requested_gpu_hours"].max_value = MAX_GPU_HOURS
        self.fields["requested_gpu_hours"].widget.attrs["max"] = MAX_GPU_HOURS
        self.fields["duration_months"].max_value = 24
        self.fields["duration_months"].widget.attrs["max"] = 24


class MessageForm(forms.Form):
    message = forms.CharField(
        label=_("Message"), max_length=5000, widget=forms.Textarea(attrs={"rows": 3})
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason for the applicant"),
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class ApproveForm(forms.Form):
    gpu_hours = forms.IntegerField(
        label=_("GPU-hours to grant"), min_value=1, max_value=MAX_GPU_HOURS
    )
    expires_on = forms.DateField(
        label=_("Credits expire on"), widget=forms.DateInput(attrs={"type": "date"})
    )
    rate_pkr_per_gpu_hour = forms.DecimalField(
        label=_("PKR per GPU-hour (fixed for this grant)"),
        min_value=Decimal(0),
        max_value=Decimal("1000000"),
        decimal_places=2,
        max_digits=12,
    )
    message = forms.CharField(
        label=_("Note to the applicant"),
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    @classmethod
    def for_application(cls, application: CreditApplication, **kwargs) -> "ApproveForm":
        months = application.duration_months
        return cls(
            **kwargs,
            initial={
                "gpu_hours": application.requested_gpu_hours,
                "expires_on": timezone.localdate() + dt.timedelta(days=31 * months),
                "rate_pkr_per_gpu_hour": settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR,
            },
        )

    def clean_expires_on(self):
        value = self.cleaned_data["expires_on"]
        if value <= timezone.localdate():
            raise forms.ValidationError(_("The expiry must be after today."))
        return value

    def expires_at(self) -> dt.datetime:
        """The end of the chosen day, Pakistan time."""
        return day_end(self.cleaned_data["expires_on"])


class ReasonForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500)


class AdjustmentForm(forms.Form):
    """A manual correction. The hidden token makes a double submit post once."""

    gpu_hours = forms.DecimalField(
        label=_("GPU-hours (negative to take away)"),
        max_digits=12,
        decimal_places=2,
        min_value=Decimal(-MAX_GPU_HOURS),
        max_value=Decimal(MAX_GPU_HOURS),
    )
    reason = forms.CharField(label=_("Reason"), max_length=500)
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def clean_gpu_hours(self):
        value = self.cleaned_data["gpu_hours"]
        if value == 0:
            raise forms.ValidationError(_("Enter an amount other than zero."))
        return value


class QueueFilterForm(forms.Form):
    state = forms.MultipleChoiceField(
        label=_("State"),
        required=False,
        choices=ApplicationState.choices,
        widget=forms.CheckboxSelectMultiple,
    )
    sector = forms.ChoiceField(
        label=_("Sector"), required=False, choices=[("", _("Any")), *Sector.choices]
    )
    min_days_waiting = forms.IntegerField(
        label=_("Waiting at least (days)"), required=False, min_value=0, max_value=3650
    )
