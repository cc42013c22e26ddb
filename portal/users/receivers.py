"""Receive authentication events from Django and allauth and record them in the audit log.

Signals are used only to hear third-party code; each receiver calls the audit service at once.
"""

from allauth.account import signals as account_signals
from allauth.account.internal.flows.login import record_authentication
from allauth.mfa import signals as mfa_signals
from allauth.mfa.models import Authenticator
from django.contrib.auth import signals as auth_signals
from django.dispatch import receiver

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record, client_ip

from .services import user_mfa_enrolled


def _record(action: AuditAction, request, user, **data) -> None:
    """An event the person did to their own account."""
    audit_record(actor=user, action=action, target=user, ip=client_ip(request), data=data)


@receiver(auth_signals.user_logged_in)
def _signed_in(sender, request, user, **kwargs):
    _record(AuditAction.AUTH_SIGNED_IN, request, user)


@receiver(auth_signals.user_logged_out)
def _signed_out(sender, request, user, **kwargs):
    # (sandboxes.launcher.receivers ends the hub session on the same signal)
    if user is not None:
        _record(AuditAction.AUTH_SIGNED_OUT, request, user)


@receiver(auth_signals.user_login_failed)
def _sign_in_failed(sender, credentials, request=None, **kwargs):
    # Django has already scrubbed the password from `credentials`; keep only the address tried.
    attempted = str(credentials.get("email") or credentials.get("username") or "")[:254]
    audit_record(
        actor=None,
        action=AuditAction.AUTH_SIGN_IN_FAILED,
        ip=client_ip(request),
        data={"email": attempted},
    )


@receiver(account_signals.user_signed_up)
def _signed_up(sender, request, user, **kwargs):
    _record(AuditAction.AUTH_SIGNED_UP, request, user)


@receiver(account_signals.email_confirmed)
def _email_confirmed(sender, request, email_address, **kwargs):
    _record(AuditAction.AUTH_EMAIL_VERIFIED, request, email_address.user, email=email_address.email)


@receiver(account_signals.email_changed)
def _email_changed(sender, request, user, from_email_address, to_email_address, **kwargs):
    previous = getattr(from_email_address, "email", None)
    _record(
        AuditAction.AUTH_EMAIL_CHANGED,
        request,
        user,
        **{"from": previous, "to": to_email_address.email},
    )


@receiver(account_signals.password_changed)
@receiver(account_signals.password_set)
def _password_changed(sender, request, user, **kwargs):
    _record(AuditAction.AUTH_PASSWORD_CHANGED, request, user)


@receiver(account_signals.password_reset)
def _password_reset(sender, request, user, **kwargs):
    _record(AuditAction.AUTH_PASSWORD_RESET, request, user)


MFA_ACTIONS = {
    mfa_signals.authenticator_added: AuditAction.MFA_ADDED,
    mfa_signals.authenticator_removed: AuditAction.MFA_REMOVED,
    mfa_signals.authenticator_reset: AuditAction.MFA_RECOVERY_CODES_RESET,
    mfa_signals.authentication_failed: AuditAction.MFA_FAILED,
}


def _mfa_event(sender, request, user, authenticator, signal, **kwargs):
    _record(MFA_ACTIONS[signal], request, user, type=authenticator.type)


for _signal in MFA_ACTIONS:
    _signal.connect(_mfa_event, dispatch_uid=f"audit:{MFA_ACTIONS[_signal]}")


@receiver(mfa_signals.authenticator_added, dispatch_uid="users:mfa_enrolled")
def _mfa_enrolled(sender, request, user, authenticator, **kwargs):
    """TOTP set up (recovery codes come with it and change nothing here): the session in hand
    has just entered a valid code from it, so it counts as having passed MFA (allauth's record
    of the step, as at a sign-in); every other session of the account ends."""
    if authenticator.type == Authenticator.Type.RECOVERY_CODES:
        return
    record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type)
    user_mfa_enrolled(
        user=user, current_session_key=request.session.session_key, ip=client_ip(request)
    )
