"""What the launcher does when something below it changes: a person leaving an organisation, or
signing out of the portal. The apps below send the signal; they do not import the launcher."""

from django.contrib.auth import signals as auth_signals
from django.dispatch import receiver

from portal.audit.actions import AuditAction
from portal.organisations.signals import membership_changed

from .leaving import hub_sessions_end, organisation_sandboxes_enforce


@receiver(membership_changed)
def _membership_changed(sender, *, organisation, user, acting_user, ip, removed, **kwargs):
    stopped = organisation_sandboxes_enforce(
        user=user, organisation=organisation, acting_user=acting_user, ip=ip
    )
    if removed:
        hub_sessions_end(user_ids=[user.pk], reason=AuditAction.MEMBERSHIP_REMOVED)
        return {"sandboxes_stopped": stopped}
    return {"sandboxes_stopped": stopped} if stopped else {}


@receiver(auth_signals.user_logged_out)
def _signed_out(sender, request, user, **kwargs):
    # The hub's login would outlive the portal session: end it too.
    if user is not None:
        hub_sessions_end(user_ids=[user.pk], reason=AuditAction.AUTH_SIGNED_OUT)
