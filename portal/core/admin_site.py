"""The Django admin behind the same door as everything else: allauth sign-in, then MFA.

Django's own admin login has no rate limits and no second factor, so it is never shown: the
admin sends people to allauth's sign-in, and staff without two-factor authentication to set it up.
"""

from django.contrib import admin, messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _

from portal.users.selectors import user_has_mfa


class PortalAdminSite(admin.AdminSite):
    site_header = "National AI Cloud administration"
    site_title = "National AI Cloud"

    def has_permission(self, request) -> bool:
        return super().has_permission(request) and user_has_mfa(user=request.user)

    def login(self, request, extra_context=None):
        user = request.user
        if user.is_authenticated and not (user.is_active and user.is_staff):
            raise PermissionDenied  # signed in, but not staff: signing in again would loop
        if user.is_authenticated:
            messages.warning(
                request, _("The admin needs two-factor authentication. Set it up to continue.")
            )
            return redirect("mfa_activate_totp")
        next_url = request.GET.get(REDIRECT_FIELD_NAME) or reverse(
            "admin:index", current_app=self.name
        )
        return redirect_to_login(next_url, login_url=reverse("account_login"))
