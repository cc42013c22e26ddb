"""allauth adapter: how the portal creates users and where it sends them."""

from allauth.account.adapter import DefaultAccountAdapter
from django.urls import reverse

from .services import email_normalise, hub_username_generate


class AccountAdapter(DefaultAccountAdapter):
    def clean_email(self, email: str) -> str:
        return email_normalise(super().clean_email(email))

    def populate_username(self, request, user) -> None:
        # The portal has no usernames; the hub username is generated, never chosen.
        if not user.hub_username:
            user.hub_username = hub_username_generate(email=user.email)

    def save_user(self, request, user, form, commit=True):
        user = super().save_user(request, user, form, commit=False)
        user.name = form.cleaned_data.get("name", "").strip()
        user.language = getattr(request, "LANGUAGE_CODE", user.language) or user.language
        if commit:
            user.save()
        return user

    def get_login_redirect_url(self, request) -> str:
        # Onboarding decides where a person belongs (organisation, student home, programme).
        return reverse("onboarding:start")

    def get_email_verification_redirect_url(self, email_address) -> str:
        return reverse("onboarding:start")
