"""Low-balance warnings: each threshold a lot falls to is recorded once, and mailed to the
holder (a student, or the organisation's owners and admins) after commit."""

from django.conf import settings

from portal.core.mail import mail_send_after_commit
from portal.organisations.models import Membership

from ..models import CreditAccount, CreditGrant, CreditWarning
from ..units import display_gpu_hours


def _below_a_threshold(lot) -> bool:
    lowest = max(settings.CREDITS_WARNING_THRESHOLDS_PERCENT, default=0)
    return lot.remaining * 100 <= lowest * lot.amount


def warnings_check(*, grant_ids) -> list[CreditWarning]:
    """Record (once) each threshold a lot has fallen to, and tell the organisation's owners."""
    return _warnings_record(list(grant_ids))


def _warnings_record(grant_ids: list[int]) -> list[CreditWarning]:
    if not grant_ids:
        return []
    thresholds = sorted(settings.CREDITS_WARNING_THRESHOLDS_PERCENT, reverse=True)
    created = []
    for grant in CreditGrant.objects.filter(pk__in=grant_ids).select_related("account"):
        for threshold in thresholds:
            if grant.remaining * 100 > threshold * grant.amount:
                continue
            warning, is_new = CreditWarning.objects.get_or_create(
                grant=grant, threshold_percent=threshold
            )
            if is_new:
                created.append(warning)
                _warning_notify(warning)
    return created


def _warning_recipients(account: CreditAccount) -> list:
    if account.kind == CreditAccount.Kind.STUDENT:
        return [account.user]
    owners = (
        Membership.objects.managers()
        .filter(organisation_id=account.organisation_id)
        .select_related("user")
    )
    return [m.user for m in owners]


def _warning_notify(warning: CreditWarning) -> None:
    grant = warning.grant
    for person in _warning_recipients(grant.account):
        mail_send_after_commit(
            template="credits/email/low_balance",
            to=person.email,
            language=person.language,
            context={
                "threshold": warning.threshold_percent,
                "remaining_gpu_hours": display_gpu_hours(grant.remaining),
                "granted_gpu_hours": display_gpu_hours(grant.amount),
                "expires_at": grant.expires_at,
                "holder": str(grant.account.organisation or grant.account.user),
                "url": settings.SITE_URL,
            },
        )
