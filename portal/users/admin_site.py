"""The Django admin behind the same door as everything else: allauth sign-in, then MFA.

Django's own admin login has no rate limits and no second factor, so it is never shown: the
admin sends people to allauth's sign-in, staff without two-factor authentication to set it up,
and staff whose session has not passed it to enter a code.
"""

from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from .selectors import session_passed_mfa
from .views import second_factor_redirect


class PortalAdminSite(admin.AdminSite):
    site_header = "National AI Cloud administration"
    site_title = "National AI Cloud"

    def has_permission(self, request) -> bool:
        # The session must have used the second factor, not only the account have one.
        return super().has_permission(request) and session_passed_mfa(
            session=request.session, user=request.user
        )

    def login(self, request, extra_context=None):
        user = request.user
        if user.is_authenticated and not (user.is_active and user.is_staff):
            raise PermissionDenied  # signed in, but not staff: signing in again would loop
        next_url = request.GET.get(REDIRECT_FIELD_NAME, "")
        if not url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            next_url = reverse("admin:index", current_app=self.name)
        if self.has_permission(request):  # back from the second factor
            return redirect(next_url)
        if user.is_authenticated:
            return second_factor_redirect(
                request,
                next_url=next_url,
                set_up=_("The admin needs two-factor authentication. Set it up to continue."),
                enter_code=_(
                    "The admin needs a sign-in with two-factor authentication. Enter a code from "
                    "your authenticator app to continue."
                ),
            )
        return redirect_to_login(next_url, login_url=reverse("account_login"))
