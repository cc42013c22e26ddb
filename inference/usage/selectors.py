"""Reads of model usage: who pays for a request, and what an account already owes or holds."""

from __future__ import annotations

from django.db.models import Q, Sum

from portal.credits.models import CreditAccount
from portal.credits.selectors import account_of

from .models import ModelRequest, ModelSpend


def account_for_key(key) -> CreditAccount | None:
    """The account a key's requests are paid from: its organisation's for an organisation key,
    the person's own (student) account for a personal key; never an organisation a personal
    key's owner belongs to. None when that account was never opened (nothing to spend)."""
    if key.organisation_id is not None:
        return account_of(organisation=key.organisation)
    return account_of(user=key.user)


def account_for_user(user, *, organisation=None) -> CreditAccount | None:
    """The account a signed-in person's requests (the playground) are paid from: the
    organisation's when they name one they belong to, else their own. Naming an organisation
    they do not belong to gives None, as if it had no account."""
    if organisation is not None:
        if not organisation.memberships.filter(user=user).exists():
            return None
        return account_of(organisation=organisation)
    return account_of(user=user)


def account_may_pay_for(*, account: CreditAccount, api_key=None, user=None) -> bool:
    """Whether `account` is one the key (or, without a key, the person) may spend from: the
    same rule as `account_for_key` / `account_for_user`, checked where the hold is written."""
    if account.is_system:
        return False
    if api_key is not None:
        if api_key.organisation_id is not None:
            return account.organisation_id == api_key.organisation_id
        return account.user_id is not None and account.user_id == api_key.user_id
    if user is None:
        return False
    if account.user_id is not None:
        return account.user_id == user.pk
    return account.organisation.memberships.filter(user=user).exists()


def unposted_microcredits(*, account_id: int) -> int:
    """What the account's running holds and finished-but-unposted costs add up to, read in one
    statement (one snapshot: a request finishing meanwhile is counted as its hold or as its
    cost, never as neither). Served by the partial index llm_requests_unposted."""
    sums = ModelRequest.objects.filter(
        account_id=account_id,
        status__in=[ModelRequest.Status.RUNNING, ModelRequest.Status.FINISHED],
    ).aggregate(
        held=Sum("held_microcredits", filter=Q(status=ModelRequest.Status.RUNNING)),
        cost=Sum("cost_microcredits", filter=Q(status=ModelRequest.Status.FINISHED)),
    )
    return (sums["held"] or 0) + (sums["cost"] or 0)


def carried_microcredits(spend: ModelSpend | None) -> int:
    """The priced part not yet charged to the ledger (under one credit-second after each
    posting): it is owed already, so it counts against what the account may still spend."""
    if spend is None:
        return 0
    return spend.priced_microcredits - spend.charged_credit_seconds * 1_000_000
