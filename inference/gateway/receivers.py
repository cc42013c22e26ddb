"""What the gateway remembers of a key's caller (callers.py) also depends on the paying
account existing and on the organisation's request-logging policy: a change to either moves
the keys' generation on (portal.apikeys.keycache), as a key or membership change does."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from inference.usage.models import RequestLogPolicy
from portal.apikeys.keycache import keys_changed
from portal.credits.models import CreditAccount


@receiver(post_save, sender=RequestLogPolicy, dispatch_uid="gateway-logpolicy-save")
@receiver(post_delete, sender=RequestLogPolicy, dispatch_uid="gateway-logpolicy-delete")
def _log_policy_changed(sender, **kwargs):
    keys_changed()


@receiver(post_save, sender=CreditAccount, dispatch_uid="gateway-account-save")
def _account_saved(sender, *, created: bool, **kwargs):
    # Only an account opened matters (a caller with none is refused for its quota); a balance
    # change is read by the hold itself.
    if created:
        keys_changed()


@receiver(post_delete, sender=CreditAccount, dispatch_uid="gateway-account-delete")
def _account_deleted(sender, **kwargs):
    keys_changed()
