"""Per-person preferences, and the way to the second factor when a page needs it."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.i18n import set_language

from .selectors import user_has_mfa


@require_POST
def language_set(request: HttpRequest) -> HttpResponse:
    """Django's set_language (cookie + safe redirect), remembered on the account for e-mails."""
    response = set_language(request)
    language = request.POST.get("language", "")
    user = request.user
    if user.is_authenticated and language in dict(settings.LANGUAGES) and user.language != language:
        user.language = language
        user.save(update_fields=["language"])
    return response


def second_factor_redirect(
    request: HttpRequest, *, set_up: str, enter_code: str, next_url: str | None = None
) -> HttpResponse:
    """Send a person whose session has not passed MFA to the step they lack: set TOTP up, or
    enter a code for this session (allauth's MFA re-authentication, which records the step in
    the session), and then back to `next_url` (where they were)."""
    if not user_has_mfa(user=request.user):
        messages.warning(request, set_up)
        return redirect("mfa_activate_totp")
    messages.warning(request, enter_code)
    query = urlencode({REDIRECT_FIELD_NAME: next_url or request.get_full_path()})
    return redirect(f"{reverse('mfa_reauthenticate')}?{query}")
