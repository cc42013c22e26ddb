"""Forms for the organisation pages; they validate shape, services enforce the rules."""

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Organisation, Role
from .validators import ntn_normalise, secp_registration_number_normalise


class OrganisationForm(forms.ModelForm):
    website = forms.URLField(
        label=_("Website"), required=False, assume_scheme="https", max_length=200
    )

    class Meta:
        model = Organisation
        fields = [
            "legal_name",
            "secp_registration_number",
            "ntn",
            "sector",
            "city",
            "province",
            "website",
            "team_size",
            "data_sensitivity",
        ]
        help_texts = {
            "legal_name": _("As written on the certificate of incorporation."),
            "secp_registration_number": _("Seven digits, for example 0123456."),
            "ntn": _("Optional. Seven digits, a dash and a check digit, for example 1234567-8."),
            "data_sensitivity": _("This decides where your work may run and who may review it."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Accept the CUIN- prefix and spaces; the model field holds the 7 canonical digits.
        self.fields["secp_registration_number"].max_length = 20
        self.fields["secp_registration_number"].widget.attrs.update(
            maxlength=20, inputmode="numeric"
        )
        self.fields["ntn"].max_length = 12
        self.fields["ntn"].widget.attrs.update(maxlength=12)
        self.fields["legal_name"].widget.attrs.update(autocomplete="organization")

    def clean_secp_registration_number(self) -> str:
        return secp_registration_number_normalise(self.cleaned_data["secp_registration_number"])

    def clean_ntn(self) -> str | None:
        value = (self.cleaned_data.get("ntn") or "").strip()
        return ntn_normalise(value) if value else None

    def validate_unique(self) -> None:
        # Uniqueness is the service's rule (with a clear message and a race-safe constraint).
        return


class InvitationForm(forms.Form):
    email = forms.EmailField(
        label=_("E-mail address"), widget=forms.EmailInput(attrs={"autocomplete": "off"})
    )
    role = forms.ChoiceField(
        label=_("Role"),
        choices=[(Role.MEMBER, Role.MEMBER.label), (Role.ADMIN, Role.ADMIN.label)],
        initial=Role.MEMBER,
    )


class RoleForm(forms.Form):
    role = forms.ChoiceField(
        label=_("Role"),
        choices=[(Role.MEMBER, Role.MEMBER.label), (Role.ADMIN, Role.ADMIN.label)],
    )
