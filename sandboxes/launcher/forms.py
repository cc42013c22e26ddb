from django import forms
from django.utils.translation import gettext_lazy as _

from portal.organisations.models import Organisation

from .models import ResourceProfile, SandboxImage


class LaunchForm(forms.Form):
    image = forms.ModelChoiceField(
        label=_("Image"),
        queryset=SandboxImage.objects.filter(is_active=True),
        to_field_name="slug",
        widget=forms.RadioSelect,
        empty_label=None,
    )
    profile = forms.ModelChoiceField(
        label=_("Resources"),
        queryset=ResourceProfile.objects.filter(is_active=True),
        to_field_name="slug",
        widget=forms.RadioSelect,
        empty_label=None,
    )
    organisation = forms.ModelChoiceField(
        label=_("Paid by"),
        queryset=Organisation.objects.none(),
        to_field_name="public_id",
        required=False,
        empty_label=None,
    )
    name = forms.CharField(label=_("Name (optional)"), max_length=80, required=False)

    def __init__(self, *args, user, profiles=None, **kwargs):
        super().__init__(*args, **kwargs)
        organisations = Organisation.objects.for_user(user).filter(is_active=True)
        if hasattr(user, "student_profile") or organisations.count() < 2:
            del self.fields["organisation"]
        else:
            self.fields["organisation"].queryset = organisations
        if profiles is not None:
            self.fields["profile"].queryset = ResourceProfile.objects.filter(
                pk__in=[choice.profile.pk for choice in profiles]
            )
        # A newcomer can press Launch at once: the first image and the first (smallest) profile.
        self.fields["image"].initial = self.fields["image"].queryset.first()
        self.fields["profile"].initial = self.fields["profile"].queryset.first()


class DeleteForm(forms.Form):
    delete_home = forms.BooleanField(
        label=_("Also delete my home folder and every file in it"),
        required=False,
        help_text=_("Your files are shared by all your sandboxes. This cannot be undone."),
    )
    confirm = forms.CharField(
        label=_("To delete the home folder, type DELETE"), required=False, max_length=10
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("delete_home") and cleaned.get("confirm") != "DELETE":
            self.add_error("confirm", _("Type DELETE to confirm deleting your files."))
        return cleaned
