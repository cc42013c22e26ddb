"""What other apps learn about memberships.

Organisations sit low in the house; what a change of membership does to the things above it
(sandboxes billed to the organisation, API keys the person answered for) is done up there, by
receivers of `membership_changed`, inside the transaction that made the change.
"""

from django.dispatch import Signal

# Sent with organisation, user, acting_user, ip and removed (True: the person left or was
# removed; False: their role changed). A receiver may return a dict of figures for the change's
# audit record (for example the sandboxes it stopped).
membership_changed = Signal()


def membership_changed_send(*, organisation, user, acting_user, ip, removed: bool) -> dict:
    """Tell the receivers; the figures they return, merged, for the audit record."""
    figures: dict = {}
    for _receiver, answer in membership_changed.send(
        sender=organisation.__class__,
        organisation=organisation,
        user=user,
        acting_user=acting_user,
        ip=ip,
        removed=removed,
    ):
        figures.update(answer or {})
    return figures
