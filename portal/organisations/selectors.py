"""Reads about organisations."""

from django.db.models import QuerySet

from portal.users.models import User

from .models import Invitation, Membership, Organisation


def organisation_for_user(*, user: User, slug: str) -> Organisation | None:
    """The organisation, when the person belongs to it; None hides others' organisations (404)."""
    return Organisation.objects.for_user(user).filter(slug=slug).first()


def membership_get(*, organisation: Organisation, user: User) -> Membership | None:
    return Membership.objects.filter(organisation=organisation, user=user).first()


def memberships_list(*, organisation: Organisation) -> QuerySet[Membership]:
    return organisation.memberships.select_related("user").order_by("role", "user__email")


def invitations_pending(*, organisation: Organisation) -> QuerySet[Invitation]:
    return organisation.invitations.pending().select_related("invited_by")


def organisations_of(*, user: User) -> QuerySet[Organisation]:
    return Organisation.objects.for_user(user)
