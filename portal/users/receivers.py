"""Receive authentication events from Django and allauth and record them in the audit log.

Signals are used only to hear third-party code; each receiver calls a service at once.
"""

from allauth.account import signals as account_signals
from allauth.mfa import signals as mfa_signals
from django.contrib.auth import signals as auth_signals
from django.dispatch import receiver

from portal.audit.services import audit_record, client_ip


@receiver(auth_signals.user_logged_in)
def _signed_in(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.signed_in", target=user, ip=client_ip(request))


@receiver(auth_signals.user_logged_out)
def _signed_out(sender, request, user, **kwargs):
    if user is not None:
        audit_record(actor=user, action="auth.signed_out", target=user, ip=client_ip(request))


@receiver(auth_signals.user_login_failed)
def _sign_in_failed(sender, credentials, request=None, **kwargs):
    # Django has already scrubbed the password from `credentials`; keep only the address tried.
    attempted = str(credentials.get("email") or credentials.get("username") or "")[:254]
    audit_record(
        actor=None, action="auth.sign_in_failed", ip=client_ip(request), data={"email": attempted}
    )


@receiver(account_signals.user_signed_up)
def _signed_up(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.signed_up", target=user, ip=client_ip(request))


@receiver(account_signals.email_confirmed)
def _email_confirmed(sender, request, email_address, **kwargs):
    user = email_address.user
    audit_record(
        actor=user,
        action="auth.email_verified",
        target=user,
        ip=client_ip(request),
        data={"email": email_address.email},
    )


@receiver(account_signals.email_changed)
def _email_changed(sender, request, user, from_email_address, to_email_address, **kwargs):
    audit_record(
        actor=user,
        action="auth.email_changed",
        target=user,
        ip=client_ip(request),
        data={
            "from": getattr(from_email_address, "email", None),
            "to": to_email_address.email,
        },
    )


@receiver(account_signals.password_changed)
@receiver(account_signals.password_set)
def _password_changed(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.password_changed", target=user, ip=client_ip(request))


@receiver(account_signals.password_reset)
def _password_reset(sender, request, user, **kwargs):
    audit_record(actor=user, action="auth.password_reset", target=user, ip=client_ip(request))


@receiver(mfa_signals.authenticator_added)
def _mfa_added(sender, request, user, authenticator, **kwargs):
    audit_record(
        actor=user,
        action="mfa.added",
        target=user,
        ip=client_ip(request),
        data={"type": authenticator.type},
    )


@receiver(mfa_signals.authenticator_removed)
def _mfa_removed(sender, request, user, authenticator, **kwargs):
    audit_record(
        actor=user,
        action="mfa.removed",
        target=user,
        ip=client_ip(request),
        data={"type": authenticator.type},
    )


@receiver(mfa_signals.authenticator_reset)
def _mfa_reset(sender, request, user, authenticator, **kwargs):
    audit_record(
        actor=user,
        action="mfa.recovery_codes_reset",
        target=user,
        ip=client_ip(request),
        data={"type": authenticator.type},
    )


@receiver(mfa_signals.authentication_failed)
def _mfa_failed(sender, request, user, authenticator, **kwargs):
    audit_record(
        actor=user,
        action="mfa.failed",
        target=user,
        ip=client_ip(request),
        data={"type": authenticator.type},
    )
