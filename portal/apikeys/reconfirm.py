"""The key page's re-confirm button: an owner takes on an organisation's key that stopped
because the person who answered for it left or was demoted. (A view of its own beside views.py;
thin: the service decides.)"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError

from . import services
from .models import ApiKey


@login_required
@require_POST
def apikey_reconfirm(request: HttpRequest, public_id) -> HttpResponse:
    key = get_object_or_404(ApiKey.objects.for_user(request.user), public_id=public_id)
    try:
        services.apikey_reconfirm(key=key, acting_user=request.user, ip=client_ip(request))
    except ApplicationError as error:  # PermissionDenied included: an admin, not the owner
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            _("You now answer for the key “%(name)s” (%(prefix)s); it works again.")
            % {"name": key.name, "prefix": key.display_prefix},
        )
    return redirect("apikeys:list")
