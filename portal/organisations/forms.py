"""Forms for the organisation pages; they validate shape, services enforce the rules."""

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Organisation, Role
from .validators import ntn_normalise, secp_registration_number_normalise


class OrganisationForm(forms.ModelForm):
    # Wider than the stored columns: people type "CUIN-0123456" or "1234567-8 "; the clean_*
    # methods reduce what they type to the canonical spelling the model stores.
    secp_registration_number = forms.CharField(
        label=_("SECP registration number (CUIN)"),
        max_length=20,
        help_text=_("Seven digits, for example 0123456."),
        widget=forms.TextInput(attrs={"inputmode": "numeric"}),
    )
    ntn = forms.CharField(
        label=_("NTN"),
        max_length=12,
        required=False,
        help_text=_("Optional. Seven digits, a dash and a check digit, for example 1234567-8."),
    )
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
            "data_sensitivity": _("This decides where your work may run and who may review it."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
