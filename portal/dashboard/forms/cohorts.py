"""A new cohort, and what can change once it exists."""

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.onboarding.models import University


class CohortForm(forms.Form):
    name = forms.CharField(label=_("Cohort name"), max_length=200)
    university = forms.ModelChoiceField(
        label=_("University"), queryset=University.objects.all(), required=False
    )
    capacity = forms.IntegerField(label=_("Capacity"), min_value=1, max_value=100_000)
    expires_at = forms.DateTimeField(
        label=_("Code expires at"),
        # The format a datetime-local input shows (local time, to the minute).
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    monthly_allowance_gpu_hours = forms.IntegerField(
        label=_("Monthly allowance (GPU-hours)"),
        required=False,
        min_value=0,
        max_value=10_000,
        help_text=_("Leave empty for the programme's default; 0 for none."),
    )


class CohortEditForm(CohortForm):
    """What can change once a cohort exists: not its university (students joined under it)."""

    field_order = ["name", "capacity", "expires_at", "monthly_allowance_gpu_hours"]

    def __init__(self, *args, cohort, **kwargs):
        self.cohort = cohort
        kwargs.setdefault(
            "initial",
            {
                "name": cohort.name,
                "capacity": cohort.capacity,
                "expires_at": timezone.localtime(cohort.expires_at),
                "monthly_allowance_gpu_hours": cohort.monthly_allowance_gpu_hours,
            },
        )
        super().__init__(*args, **kwargs)
        del self.fields["university"]
        self.fields["monthly_allowance_gpu_hours"].help_text = _(
            "Leave empty for the programme's default; 0 for none. A change applies from the next "
            "monthly allowance."
        )

    def clean_expires_at(self):
        # The input shows minutes: the same minute sent back is the expiry left as it was.
        value = self.cleaned_data["expires_at"]
        if value == self.cohort.expires_at.replace(second=0, microsecond=0):
            return self.cohort.expires_at
        return value
