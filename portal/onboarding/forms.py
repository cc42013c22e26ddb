"""Onboarding forms. Shapes and formats here; eligibility rules live in the services."""

from django import forms
from django.utils.translation import gettext_lazy as _

from portal.organisations.forms import OrganisationForm

from .models import University
from .services import graduation_year_range


class StartupForm(OrganisationForm):
    """Company registration: the organisation form, as the founder sees it."""


class StudentForm(forms.Form):
    programme = forms.CharField(
        label=_("Degree programme"),
        max_length=200,
        help_text=_("For example BS Computer Science or MS Data Science."),
    )
    expected_graduation_year = forms.TypedChoiceField(
        label=_("Expected graduation year"), coerce=int, choices=()
    )
    cohort_code = forms.CharField(
        label=_("Cohort invite code"),
        max_length=20,
        required=False,
        help_text=_("Only if your instructor gave you one, for example K7RM-P2QX."),
    )
    university = forms.ModelChoiceField(
        label=_("University"),
        queryset=University.objects.filter(is_active=True),
        required=False,
        help_text=_("With a cohort code: your university, if it is on the list."),
    )
    institution = forms.CharField(
        label=_("Other institution"),
        max_length=200,
        required=False,
        help_text=_("With a cohort code: your institution, if it is not on the list."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        years = [(year, str(year)) for year in graduation_year_range()]
        self.fields["expected_graduation_year"].choices = [("", "—"), *years]
        self.fields["cohort_code"].widget.attrs.update(
            autocapitalize="characters", spellcheck="false"
        )
