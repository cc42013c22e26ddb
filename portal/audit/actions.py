"""Every action the audit log records, in one vocabulary.

The values are what the database stores and the CSV export writes: they never change (old rows
keep them), and a new action is a new member. `audit_record` refuses anything else. The labels
are for people reading the audit page.

`AuditEvent.action` itself carries no `choices`: the log keeps every row it ever had, including
actions that may be retired one day, and choices on the column would ask for a migration of the
audit app each time any app adds an action.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _


class AuditAction(models.TextChoices):
    # A person and their own account
    AUTH_SIGNED_UP = "auth.signed_up", _("Signed up")
    AUTH_SIGNED_IN = "auth.signed_in", _("Signed in")
    AUTH_SIGNED_OUT = "auth.signed_out", _("Signed out")
    AUTH_SIGN_IN_FAILED = "auth.sign_in_failed", _("Sign-in failed")
    AUTH_EMAIL_VERIFIED = "auth.email_verified", _("E-mail address verified")
    AUTH_EMAIL_CHANGED = "auth.email_changed", _("E-mail address changed")
    AUTH_PASSWORD_CHANGED = "auth.password_changed", _("Password changed")
    AUTH_PASSWORD_RESET = "auth.password_reset", _("Password reset")
    AUTH_OTHER_SESSIONS_ENDED = "auth.other_sessions_ended", _("Other sessions ended")
    MFA_ADDED = "mfa.added", _("Two-factor authentication added")
    MFA_REMOVED = "mfa.removed", _("Two-factor authentication removed")
    MFA_RECOVERY_CODES_RESET = "mfa.recovery_codes_reset", _("Recovery codes reset")
    MFA_FAILED = "mfa.failed", _("Two-factor authentication failed")
    PROGRAMME_MANAGER_GRANTED = "programme_manager.granted", _("Programme manager role granted")
    PROGRAMME_MANAGER_REVOKED = "programme_manager.revoked", _("Programme manager role revoked")
    # API keys
    APIKEY_CREATED = "apikey.created", _("API key created")
    APIKEY_REVOKED = "apikey.revoked", _("API key revoked")
    APIKEY_RECONFIRMED = "apikey.reconfirmed", _("API key reconfirmed")
    # Organisations, invitations and memberships
    ORGANISATION_CREATED = "organisation.created", _("Organisation created")
    ORGANISATION_OWNERSHIP_TRANSFERRED = (
        "organisation.ownership_transferred",
        _("Organisation ownership transferred"),
    )
    ORGANISATION_SUSPENDED = "organisation.suspended", _("Organisation suspended")
    ORGANISATION_REACTIVATED = "organisation.reactivated", _("Organisation reactivated")
    INVITATION_CREATED = "invitation.created", _("Invitation sent")
    INVITATION_REVOKED = "invitation.revoked", _("Invitation withdrawn")
    INVITATION_ACCEPTED = "invitation.accepted", _("Invitation accepted")
    MEMBERSHIP_ROLE_CHANGED = "membership.role_changed", _("Member's role changed")
    MEMBERSHIP_REMOVED = "membership.removed", _("Member removed")
    # Students and cohorts
    STUDENT_ONBOARDED = "student.onboarded", _("Student onboarded")
    STUDENT_SUSPENDED = "student.suspended", _("Student suspended")
    STUDENT_REACTIVATED = "student.reactivated", _("Student reactivated")
    COHORT_CREATED = "cohort.created", _("Cohort created")
    COHORT_UPDATED = "cohort.updated", _("Cohort updated")
    COHORT_DEACTIVATED = "cohort.deactivated", _("Cohort deactivated")
    # Credit applications and the ledger
    APPLICATION_SUBMITTED = "application.submitted", _("Application submitted")
    APPLICATION_WITHDRAWN = "application.withdrawn", _("Application withdrawn")
    APPLICATION_COMMENTED = "application.commented", _("Application commented on")
    APPLICATION_REVIEW_STARTED = "application.review_started", _("Application review started")
    APPLICATION_CHANGES_REQUESTED = (
        "application.changes_requested",
        _("Changes requested to an application"),
    )
    APPLICATION_REJECTED = "application.rejected", _("Application rejected")
    APPLICATION_APPROVED = "application.approved", _("Application approved")
    CREDITS_GRANT_REVOKED = "credits.grant_revoked", _("Credit grant revoked")
    CREDITS_ADJUSTMENT_POSTED = "credits.adjustment_posted", _("Credit adjustment posted")
    CREDITS_ROLLUP_DRIFT = "credits.rollup_drift", _("Credit roll-up differs from the ledger")
    # Sandboxes, the hub and the GPUs
    SANDBOX_LAUNCHED = "sandbox.launched", _("Sandbox launched")
    SANDBOX_FAILED = "sandbox.failed", _("Sandbox failed")
    SANDBOX_STOP_REQUESTED = "sandbox.stop_requested", _("Sandbox stop requested")
    SANDBOX_STOPPED = "sandbox.stopped", _("Sandbox stopped")
    SANDBOX_RESTARTED = "sandbox.restarted", _("Sandbox restarted")
    SANDBOX_DELETED = "sandbox.deleted", _("Sandbox deleted")
    SANDBOX_ACCESS_TOKEN_ISSUED = "sandbox.access_token_issued", _("Sandbox access token issued")
    SANDBOX_CREDITS_EXHAUSTED = "sandbox.credits_exhausted", _("Sandbox out of credits")
    SANDBOX_MAX_AGE_REACHED = "sandbox.max_age_reached", _("Sandbox reached its maximum age")
    SANDBOX_FIREWALL_REPAIRED = "sandbox.firewall_repaired", _("Sandbox firewall repaired")
    SANDBOX_RECONCILED = "sandbox.reconciled", _("Sandbox reconciled with the hub")
    SANDBOX_RECONCILED_ORPHAN = (
        "sandbox.reconciled_orphan",
        _("Unknown notebook server stopped"),
    )
    HUB_SESSION_ENDED = "hub.session_ended", _("Hub session ended")
    METERING_DRIFT = "metering.drift", _("Metering drift found")
    GPUS_INVENTORY_CHANGED = "gpus.inventory_changed", _("GPU inventory changed")
    # Model deployments (inference)
    LLM_DEPLOYMENT_CREATED = "llm_deployment.created", _("Model deployed")
    LLM_DEPLOYMENT_SCALED = "llm_deployment.scaled", _("Model deployment scaled")
    LLM_DEPLOYMENT_STOPPED = "llm_deployment.stopped", _("Model deployment stopped")
    # The model API's catalogue (issue 17)
    MODEL_CREATED = "model.created", _("Model added to the catalogue")
    MODEL_UPDATED = "model.updated", _("Model in the catalogue changed")
    MODEL_WITHDRAWN = "model.withdrawn", _("Model taken out of the catalogue")
    MODEL_RESTORED = "model.restored", _("Model offered again")
    MODEL_REQUEST_LOGGING_SET = "model.request_logging_set", _("Model request logging changed")
    # The audit log itself
    AUDIT_EXPORTED = "audit.exported", _("Audit log exported")

    @classmethod
    def label_of(cls, value: str) -> str:
        """The label of a stored action, or the stored value itself for one no longer declared."""
        try:
            return cls(value).label
        except ValueError:
            return value
