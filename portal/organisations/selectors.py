"""Reads about organisations."""

from django.db.models import QuerySet

from portal.users.models import User

from .models import Invitation, Membership, Organisation


def organisation_for_user(
    *, user: User, slug: str | None = None, public_id=None
) -> Organisation | None:
    """The organisation named by its slug (a page's URL) or its public id, when the person
    belongs to it; None hides others' organisations (404). The one lookup the pages use for
    "which organisation", as `apikeys.principal.organisation_acting_for` is the APIs'."""
    named = {"slug": slug} if slug is not None else {"public_id": public_id}
    return Organisation.objects.for_user(user).filter(**named).first()


def membership_get(*, organisation: Organisation, user: User) -> Membership | None:
    return Membership.objects.filter(organisation=organisation, user=user).first()


def memberships_list(*, organisation: Organisation) -> QuerySet[Membership]:
    return organisation.memberships.select_related("user").order_by("role", "user__email")


def invitations_pending(*, organisation: Organisation) -> QuerySet[Invitation]:
    return organisation.invitations.pending().select_related("invited_by")


def organisations_of(*, user: User) -> QuerySet[Organisation]:
    return Organisation.objects.for_user(user)
