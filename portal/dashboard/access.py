"""The gate in front of every programme page: a programme manager, signed in with MFA set up."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.utils.translation import gettext as _

from portal.users.selectors import user_has_mfa, user_is_programme_manager


def programme_manager_required(view):
    """Anonymous → sign in; not a programme manager → 403; no MFA yet → set it up first.

    With MFA enabled, allauth has already asked for the second factor at sign-in, so a session
    that reaches here has passed it.
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user_is_programme_manager(user=user):
            raise PermissionDenied
        if not user_has_mfa(user=user):
            messages.warning(
                request,
                _("Programme pages need two-factor authentication. Set it up to continue."),
            )
            return redirect("mfa_activate_totp")
        return view(request, *args, **kwargs)

    return wrapper
