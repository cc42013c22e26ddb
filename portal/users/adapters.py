"""allauth adapters: how the portal creates users and where it sends them; how MFA secrets are
kept."""

import base64
import hashlib

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.adapter import DefaultMFAAdapter
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from .models import email_normalise, hub_username_generate


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


# Marks a value this adapter encrypted (and the scheme, should it ever change).
MFA_SECRET_PREFIX = "fernet:"  # noqa: S105 - a marker, not a secret


def _mfa_fernet() -> Fernet:
    """Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from MFA_ENCRYPTION_KEY, a secret
    apart from SECRET_KEY: a leaked database, or a leaked SECRET_KEY, does not give away the
    TOTP secrets."""
    secret = getattr(settings, "MFA_ENCRYPTION_KEY", "")
    if not secret:
        raise ImproperlyConfigured("MFA_ENCRYPTION_KEY is not set.")
    digest = hashlib.sha256(f"portal.mfa:{secret}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def mfa_secret_encrypt(text: str) -> str:
    return MFA_SECRET_PREFIX + _mfa_fernet().encrypt(text.encode()).decode("ascii")


def mfa_secret_decrypt(stored: str) -> str:
    """The secret. A value that is not ours (plaintext, or under another key) is refused, never
    used as it is: whoever can write the table must not be able to plant a known secret."""
    if not stored.startswith(MFA_SECRET_PREFIX):
        raise ValueError("This MFA secret is not encrypted: run the migrations.")
    try:
        return _mfa_fernet().decrypt(stored.removeprefix(MFA_SECRET_PREFIX).encode()).decode()
    except InvalidToken as exc:
        raise ValueError("This MFA secret does not decrypt under MFA_ENCRYPTION_KEY.") from exc


class MFAAdapter(DefaultMFAAdapter):
    """TOTP secrets and recovery-code seeds are stored encrypted (allauth calls these two)."""

    def encrypt(self, text: str) -> str:
        return mfa_secret_encrypt(text)

    def decrypt(self, encrypted_text: str) -> str:
        return mfa_secret_decrypt(encrypted_text)
