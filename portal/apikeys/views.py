"""The API keys page: make a key (shown once), list the keys you may manage, revoke one.

Thin: the form in, the services do the work. The full key exists only in the response to the
POST that made it: never in a message, a redirect, the session or a log.
"""

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError
from portal.core.forms import add_service_error
from portal.users.selectors import PROGRAMME_MFA_REQUIRED, programme_authority

from . import services
from .forms import ApiKeyForm
from .models import ApiKey
from .scopes import PROGRAMME_SCOPES


def _page(request: HttpRequest, form: ApiKeyForm, *, created=None, status: int = 200):
    keys = ApiKey.objects.for_user(request.user).select_related("organisation")
    context = {
        "form": form,
        "keys": keys,
        "created": created,  # (key, full key string) right after creation, else None
        "me_url": request.build_absolute_uri(reverse("api-v1:me")),
    }
    return render(request, "apikeys/list.html", context, status=status)


def _programme_key_asked_with_authority(request: HttpRequest) -> bool:
    """A POST for a key with a programme scope, from a session that has the authority to make
    one: such a key needs a recent re-authentication too (allauth's, its time window)."""
    return (
        request.method == "POST"
        and bool(PROGRAMME_SCOPES & set(request.POST.getlist("scopes")))
        and programme_authority(request)
    )


@never_cache  # the response to a creation holds the secret: no cache may keep it
@login_required
@reauthentication_required(enabled=_programme_key_asked_with_authority)
def apikey_list(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request, ApiKeyForm(user=request.user))
    form = ApiKeyForm(request.POST, user=request.user)
    if form.is_valid() and form.asks_for_programme_scopes() and not programme_authority(request):
        # A programme key carries the authority of a session that passed MFA; this one has not.
        form.add_error("scopes", PROGRAMME_MFA_REQUIRED)
        return _page(request, form, status=403)
    if form.is_valid():
        organisation = form.chosen_organisation()
        try:
            key, full_key = services.apikey_create(
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                acting_user=request.user,
                user=None if organisation else request.user,
                organisation=organisation,
                expires_in_days=form.cleaned_data["expires_in_days"],
                ip=client_ip(request),
            )
        except ApplicationError as error:  # PermissionDenied included
            add_service_error(form, error)
        else:
            # Rendered, not redirected: the key must not travel in a URL or the session.
            return _page(request, ApiKeyForm(user=request.user), created=(key, full_key))
    return _page(request, form, status=400)


@login_required
@require_POST
def apikey_revoke(request: HttpRequest, public_id) -> HttpResponse:
    key = get_object_or_404(ApiKey.objects.for_user(request.user), public_id=public_id)
    try:
        services.apikey_revoke(key=key, acting_user=request.user, ip=client_ip(request))
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request,
            _("The key “%(name)s” (%(prefix)s) was revoked; requests with it are refused.")
            % {"name": key.name, "prefix": key.display_prefix},
        )
    return redirect("apikeys:list")
