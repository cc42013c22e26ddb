"""Organisation pages: members, invitations, roles. Thin: forms in, services do the work."""

from allauth.account.adapter import get_adapter
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit.services import client_ip
from portal.core.exceptions import ApplicationError, PermissionDenied
from portal.core.forms import add_service_error
from portal.users.models import User

from . import services
from .forms import InvitationForm, RoleForm
from .models import Membership, Organisation, Role
from .selectors import (
    invitations_pending,
    membership_get,
    memberships_list,
    organisation_for_user,
)

PENDING_INVITATION_SESSION_KEY = "pending_invitation_token"


def organisation_or_404(request: HttpRequest, slug: str) -> Organisation:
    """The organisation, when the signed-in person belongs to it; 404 hides the others."""
    organisation = organisation_for_user(user=request.user, slug=slug)
    if organisation is None:
        raise Http404
    return organisation


def _member_or_404(organisation: Organisation, hub_username: str) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "organisation"),
        organisation=organisation,
        user__hub_username=hub_username,
    )


@login_required
def organisation_detail(
    request: HttpRequest,
    slug: str,
    invite_form: InvitationForm | None = None,
    status: int = 200,
) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    membership = membership_get(organisation=organisation, user=request.user)
    context = {
        "organisation": organisation,
        "membership": membership,
        "memberships": memberships_list(organisation=organisation),
        "invitations": invitations_pending(organisation=organisation),
        "invite_form": invite_form or InvitationForm(),
        "role_choices": RoleForm.base_fields["role"].choices,
        "Role": Role,
    }
    return render(request, "organisations/detail.html", context, status=status)


@login_required
@require_POST
def invitation_create(request: HttpRequest, slug: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    form = InvitationForm(request.POST)
    if form.is_valid():
        try:
            services.invitation_create(
                organisation=organisation,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                acting_user=request.user,
                ip=client_ip(request),
            )
        except PermissionDenied as error:
            messages.error(request, error.message)
            return organisation_detail(request, slug, status=403)
        except ApplicationError as error:
            add_service_error(form, error)
            if error.code == "rate_limited":
                return organisation_detail(request, slug, invite_form=form, status=429)
        else:
            messages.success(
                request,
                _("Invitation sent to %(email)s.") % {"email": form.cleaned_data["email"]},
            )
            return redirect(organisation_url(organisation))
    return organisation_detail(request, slug, invite_form=form, status=400)


def organisation_url(organisation: Organisation) -> str:
    return reverse("organisations:detail", kwargs={"slug": organisation.slug})


def _act(request: HttpRequest, organisation: Organisation, action, success: str) -> HttpResponse:
    """Run a service for a button press; its refusal becomes an error message on the page."""
    try:
        action()
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, success)
    return redirect(organisation_url(organisation))


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, slug: str, public_id) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    invitation = get_object_or_404(organisation.invitations, public_id=public_id)
    return _act(
        request,
        organisation,
        lambda: services.invitation_revoke(
            invitation=invitation, acting_user=request.user, ip=client_ip(request)
        ),
        _("Invitation to %(email)s withdrawn.") % {"email": invitation.email},
    )


@login_required
@require_POST
def membership_role(request: HttpRequest, slug: str, hub_username: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    membership = _member_or_404(organisation, hub_username)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose admin or member."))
        return redirect(organisation_url(organisation))
    return _act(
        request,
        organisation,
        lambda: services.membership_role_change(
            membership=membership,
            role=form.cleaned_data["role"],
            acting_user=request.user,
            ip=client_ip(request),
        ),
        _("%(person)s is now %(role)s.")
        % {
            "person": membership.user.get_full_name(),
            "role": Role(form.cleaned_data["role"]).label,
        },
    )


@login_required
@require_POST
def membership_remove(request: HttpRequest, slug: str, hub_username: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    membership = _member_or_404(organisation, hub_username)
    leaving = membership.user_id == request.user.pk
    response = _act(
        request,
        organisation,
        lambda: services.membership_remove(
            membership=membership, acting_user=request.user, ip=client_ip(request)
        ),
        _("You left %(organisation)s.") % {"organisation": organisation.legal_name}
        if leaving
        else _("%(person)s was removed.") % {"person": membership.user.get_full_name()},
    )
    if leaving and not Membership.objects.filter(pk=membership.pk).exists():
        return redirect("onboarding:start")
    return response


@login_required
@require_POST
def ownership_transfer(request: HttpRequest, slug: str, hub_username: str) -> HttpResponse:
    organisation = organisation_or_404(request, slug)
    membership = _member_or_404(organisation, hub_username)
    return _act(
        request,
        organisation,
        lambda: services.ownership_transfer(
            organisation=organisation,
            new_owner=membership,
            acting_user=request.user,
            ip=client_ip(request),
        ),
        _("%(person)s now owns %(organisation)s.")
        % {"person": membership.user.get_full_name(), "organisation": organisation.legal_name},
    )


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """The link in the invitation e-mail, for people with an account and for newcomers.

    A newcomer is sent to sign up; having received the link proves they own the address, so
    allauth is told the address is verified when they sign up with that same address.
    """
    try:
        invitation = services.invitation_from_token(token=token)
    except ApplicationError as error:
        request.session.pop(PENDING_INVITATION_SESSION_KEY, None)
        return render(
            request, "organisations/invitation_invalid.html", {"error": error.message}, status=410
        )
    user: User = request.user
    if not user.is_authenticated:
        request.session[PENDING_INVITATION_SESSION_KEY] = token
        get_adapter(request).stash_verified_email(request, invitation.email)
        has_account = User.objects.filter(email__iexact=invitation.email).exists()
        return render(
            request,
            "organisations/invitation_accept.html",
            {"invitation": invitation, "has_account": has_account},
        )
    if request.method == "POST":
        try:
            membership = services.invitation_accept(token=token, user=user, ip=client_ip(request))
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            request.session.pop(PENDING_INVITATION_SESSION_KEY, None)
            messages.success(
                request,
                _("Welcome to %(organisation)s.")
                % {"organisation": membership.organisation.legal_name},
            )
            return redirect(organisation_url(membership.organisation))
    return render(request, "organisations/invitation_accept.html", {"invitation": invitation})
