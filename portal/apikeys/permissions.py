"""Scopes: every API view declares what it needs, per HTTP method."""

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from portal.users.selectors import (
    PROGRAMME_MFA_REQUIRED,
    programme_authority,
    user_is_programme_manager,
)

from .models import ApiKey
from .scopes import PROGRAMME_SCOPES, scopes_allowed_for
from .services import apikey_effective_scopes


def granted_scopes(request) -> frozenset[str]:
    """A key: its scopes, trimmed to what its owner may do now. A browser session: everything
    the signed-in person may do."""
    if isinstance(request.auth, ApiKey):
        return apikey_effective_scopes(request.auth)
    allowed = scopes_allowed_for(user=request.user)
    if not programme_authority(request):  # a session holds programme scopes only after MFA
        allowed -= PROGRAMME_SCOPES
    return allowed


def required_scopes(view, method: str) -> list[str]:
    scopes = getattr(view, "required_scopes", None)
    if scopes is None:
        raise NotImplementedError(f"{type(view).__name__} declares no required_scopes")
    if isinstance(scopes, dict):
        return list(scopes.get(method, scopes.get("*", [])))
    return list(scopes)


class HasScopes(BasePermission):
    """403 unless the request holds every scope the view needs for this method."""

    message = _("This key lacks a scope this operation needs.")

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        needed = required_scopes(view, request.method)
        missing = set(needed) - granted_scopes(request)
        if missing:
            by_session = not isinstance(request.auth, ApiKey)
            manager = user_is_programme_manager(user=request.user)
            if by_session and manager and missing & PROGRAMME_SCOPES:
                self.message = PROGRAMME_MFA_REQUIRED  # a session that has not passed MFA
                return False
            self.message = _("Missing scope: %(scopes)s.") % {"scopes": ", ".join(sorted(missing))}
            return False
        return True
