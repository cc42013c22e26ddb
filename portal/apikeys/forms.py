"""The key-creation form. Shapes here; the rules (who may hold which scope) in the services."""

from django import forms
from django.utils.translation import gettext_lazy as _

from portal.organisations.models import Membership, Organisation

from .scopes import PROGRAMME_SCOPES, SCOPES, scopes_allowed_for
from .services import DEFAULT_EXPIRY_DAYS, MAX_EXPIRY_DAYS, PROGRAMME_MAX_EXPIRY_DAYS

PERSONAL = "personal"


def organisations_managed_by(user):
    """Organisations whose keys the person may make: those where they are owner or admin."""
    return Organisation.objects.filter(
        pk__in=Membership.objects.managers().filter(user=user).values("organisation")
    ).order_by("legal_name")


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        max_length=100,
        help_text=_("What the key is for, so you can tell it apart later: “CI pipeline”, say."),
        error_messages={"required": _("Give the key a name.")},
    )
    owner = forms.ChoiceField(
        label=_("Belongs to"),
        help_text=_(
            "A key for you acts as you. A key for an organisation acts only inside it, and "
            "stops if you leave it or stop being an admin, until its owner re-confirms it."
        ),
        error_messages={
            "invalid_choice": _(
                "You can make keys only for yourself or for an organisation where you are an "
                "owner or admin."
            )
        },
    )
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"),
        widget=forms.CheckboxSelectMultiple,
        help_text=_("What the key may do. A key never holds more than its owner may do."),
        error_messages={
            "required": _("Choose one or more scopes from the list."),
            "invalid_choice": _("A key you make cannot have the scope %(value)s."),
        },
    )
    expires_in_days = forms.IntegerField(
        label=_("Expires in (days)"),
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        initial=DEFAULT_EXPIRY_DAYS,
        help_text=_("From 1 to %(max)s days; at most %(programme)s with a programme scope.")
        % {"max": MAX_EXPIRY_DAYS, "programme": PROGRAMME_MAX_EXPIRY_DAYS},
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.organisations = {str(o.public_id): o for o in organisations_managed_by(user)}
        self.fields["owner"].choices = [(PERSONAL, _("Me"))] + [
            (public_id, organisation.legal_name)
            for public_id, organisation in self.organisations.items()
        ]
        self.fields["owner"].initial = PERSONAL
        allowed = scopes_allowed_for(user=user)
        self.fields["scopes"].choices = [
            (scope, f"{scope}: {label}") for scope, label in SCOPES.items() if scope in allowed
        ]
        if allowed & PROGRAMME_SCOPES:  # a programme manager: their keys are short-lived
            self.fields["expires_in_days"].initial = PROGRAMME_MAX_EXPIRY_DAYS

    def clean(self):
        cleaned = super().clean()
        days = cleaned.get("expires_in_days")
        if self.asks_for_programme_scopes() and days and days > PROGRAMME_MAX_EXPIRY_DAYS:
            self.add_error(
                "expires_in_days",
                _("A key with programme scopes lives at most %(max)s days.")
                % {"max": PROGRAMME_MAX_EXPIRY_DAYS},
            )
        return cleaned

    def asks_for_programme_scopes(self) -> bool:
        return bool(PROGRAMME_SCOPES & set(self.cleaned_data.get("scopes") or ()))

    def chosen_organisation(self):
        """The organisation chosen as the owner, or None for a personal key."""
        return self.organisations.get(self.cleaned_data["owner"])
