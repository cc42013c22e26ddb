"""Who is asking, for the API: a person (session or personal key) or an organisation (service
key), and what they may see."""

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext as _

from portal.core.exceptions import ApplicationError
from portal.organisations.models import Organisation
from portal.users.selectors import programme_authority, user_is_programme_manager

from .models import ApiKey


def is_service(request) -> bool:
    return getattr(request.user, "is_service_account", False)


def organisations_visible(request) -> QuerySet[Organisation]:
    if is_service(request):
        return Organisation.objects.filter(pk=request.user.organisation.pk)
    return Organisation.objects.for_user(request.user)


def is_programme_manager(request) -> bool:
    """Programme-manager authority for this API request. With a person's key, the key binds it
    (a programme scope was granted only to a session that passed MFA, and the routes still
    check the key's scopes); with a browser session, the session must have passed MFA."""
    if is_service(request):
        return False
    if isinstance(request.auth, ApiKey):
        return user_is_programme_manager(user=request.user)
    return programme_authority(request)


def organisation_acting_for(
    request, wanted=None, *, only_one_is_default: bool = True
) -> Organisation | None:
    """The organisation an API request acts for: the one it names (`wanted`, from the body, else
    `?organisation=<id>`), which must be among the caller's organisations: any other is a 404,
    as if it did not exist. Naming none: a service key acts for its own; a person for none
    (None), or with `only_one_is_default` for their only organisation, and is asked to say which
    when they belong to several."""
    organisations = organisations_visible(request)
    wanted = wanted or request.query_params.get("organisation")
    if wanted:
        try:
            return organisations.get(public_id=wanted)
        except (Organisation.DoesNotExist, ValidationError, ValueError) as exc:
            raise Http404 from exc
    if is_service(request):
        return request.user.organisation
    if not only_one_is_default:
        return None
    first_two = list(organisations[:2])
    if len(first_two) > 1:
        raise ApplicationError(
            _("You belong to several organisations: say which with ?organisation=<id>."),
            field="organisation",
        )
    return first_two[0] if first_two else None


def acting_person(request):
    """Whose authority a write uses. A person: themselves. A service key: the owner or admin who
    answers for it (its maker, or the owner who re-confirmed it), whom authentication has just
    checked is still an owner or admin of the key's organisation; so the services' role checks
    and the audit log name a real person. Never anyone else: a service key whose person left
    is refused before it gets here. What the key reaches is still only its organisation's
    (`service_organisation`)."""
    if not is_service(request):
        return request.user
    return request.auth.answerable_by


def service_organisation(request) -> Organisation | None:
    """The organisation a service key is confined to; None for a person."""
    return request.user.organisation if is_service(request) else None
