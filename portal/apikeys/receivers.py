"""API keys follow the people who answer for them; what processes remember of keys is
forgotten whenever what it was decided from changes (keycache)."""

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from portal.organisations.models import Membership, Organisation
from portal.organisations.signals import membership_changed

from .keycache import keys_changed
from .models import ApiKey
from .services import apikeys_answerable_left


@receiver(membership_changed)
def _membership_changed(sender, *, organisation, user, **kwargs):
    # Removed, or no longer an admin: the organisation's keys they answered for stop working,
    # and the owners are told.
    keys_changed()
    apikeys_answerable_left(organisation=organisation, user=user)


def _row_changed(sender, **kwargs):
    keys_changed()


# A key (scopes, expiry, revocation by save), a membership (role), a person (active, and each
# sign-in's last_login: rare beside key requests) or an organisation (active), saved or deleted.
for _model in (ApiKey, Membership, Organisation, get_user_model()):
    post_save.connect(_row_changed, sender=_model, dispatch_uid=f"keycache-save-{_model.__name__}")
    post_delete.connect(
        _row_changed, sender=_model, dispatch_uid=f"keycache-delete-{_model.__name__}"
    )


@receiver(m2m_changed, sender=get_user_model().groups.through)
def _groups_changed(sender, *, action, **kwargs):
    # The programme-managers group's members: a personal key's scopes follow its owner's role.
    if action in ("post_add", "post_remove", "post_clear"):
        keys_changed()
