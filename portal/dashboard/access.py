"""The gate in front of every programme page: a programme manager, in a session that passed
MFA."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from portal.users.selectors import programme_authority, user_is_programme_manager
from portal.users.views import second_factor_redirect


def programme_manager_required(view):
    """Anonymous → sign in; not a programme manager → 403; a programme manager whose session has
    not passed MFA → set it up, or enter a code for this session, then come back.

    Having TOTP on the account is not enough: the session must have used it (allauth's
    authentication records; `programme_authority`).
    """

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user_is_programme_manager(user=user):
            raise PermissionDenied
        if not programme_authority(request):
            return second_factor_redirect(
                request,
                set_up=_("Programme pages need two-factor authentication. Set it up to continue."),
                enter_code=_(
                    "Programme pages need a sign-in with two-factor authentication. Enter a code "
                    "from your authenticator app to continue."
                ),
            )
        return view(request, *args, **kwargs)

    return wrapper
