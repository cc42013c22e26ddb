"""Scopes: every API view declares what it needs, per HTTP method."""

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from portal.apikeys.models import ApiKey
from portal.apikeys.scopes import scopes_allowed_for
from portal.apikeys.services import apikey_effective_scopes


def granted_scopes(request) -> frozenset[str]:
    """A key: its scopes, trimmed to what its owner may do now. A browser session: everything
    the signed-in person may do."""
    if isinstance(request.auth, ApiKey):
        return apikey_effective_scopes(request.auth)
    return scopes_allowed_for(user=request.user)


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
            self.message = _("Missing scope: %(scopes)s.") % {"scopes": ", ".join(sorted(missing))}
            return False
        return True
