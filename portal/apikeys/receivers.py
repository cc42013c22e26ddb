"""API keys follow the people who answer for them."""

from django.dispatch import receiver

from portal.organisations.signals import membership_changed

from .services import apikeys_answerable_left


@receiver(membership_changed)
def _membership_changed(sender, *, organisation, user, **kwargs):
    # Removed, or no longer an admin: the organisation's keys they answered for stop working,
    # and the owners are told.
    apikeys_answerable_left(organisation=organisation, user=user)
