"""What an API key may be allowed to do. Every API view names the scopes it needs."""

from django.utils.translation import gettext_lazy as _

from portal.users.selectors import user_is_programme_manager

SCOPES = {
    "profile:read": _("Read your profile"),
    "credits:read": _("Read balances, the ledger and statements"),
    "applications:read": _("Read credit applications"),
    "applications:write": _("Create and submit credit applications"),
    "sandboxes:read": _("See sandboxes"),
    "sandboxes:write": _("Launch, stop and delete sandboxes"),
    "sandboxes:access": _("Open running sandboxes: short-lived tokens to their Jupyter servers"),
    "sandboxes:delete-home": _("Delete home folders (all the files) with a sandbox"),
    "usage:read": _("Read usage"),
    "gpus:read": _("See the GPU inventory"),
    "models:invoke": _("Call models through the model API (/llm/v1), paid in credits"),
    "programme:read": _("Programme managers: read programme data"),
    "programme:write": _("Programme managers: decide applications"),
}
PROGRAMME_SCOPES = frozenset({"programme:read", "programme:write"})
ALL_SCOPES = frozenset(SCOPES)


def scopes_allowed_for(*, user=None, organisation=None) -> frozenset[str]:
    """What the owner may do right now: a key never holds more than its owner."""
    if organisation is not None:
        return ALL_SCOPES - PROGRAMME_SCOPES if organisation.is_active else frozenset()
    if user is None or not user.is_active:
        return frozenset()
    if user_is_programme_manager(user=user):
        return ALL_SCOPES
    return ALL_SCOPES - PROGRAMME_SCOPES
