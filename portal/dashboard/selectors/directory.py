"""Reads for the programme directory: every organisation and every student, with their figures.

A list is one query for its page whatever the page size (each figure is a correlated subquery
on an indexed column, never a query per row), plus the paginator's count. "Most used this
month" ranks the accounts' usage roll-ups of the month (`credits.models.AccountRollup`, written
with each charge): it lists the holders that used GPU time this month, the most first, and
reads a page of them by their place in that ranking, without summing a single ledger entry
(the figure ordering would compute every holder's usage to sort them). Amounts are
credit-seconds; templates show them as GPU-hours.
"""

from collections.abc import Sequence

from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from portal.apikeys.models import ApiKey
from portal.audit.models import AuditEvent
from portal.credits.models import CreditAccount, CreditGrant, LedgerEntry
from portal.onboarding.models import StudentProfile
from portal.organisations.models import Membership, Organisation
from portal.users.models import User
from sandboxes.launcher.models import Sandbox

from .figures import K, month_rollups, this_month, used_in_month

RECENT_LEDGER_LINES = 20
DETAIL_ROWS = 50

ACTIVE = "active"
SUSPENDED = "suspended"

# What the "order by" choice means, with the primary key last so pages never overlap.
ORGANISATION_ORDERINGS = {
    "name": ("legal_name", "pk"),
    "-created": ("-created_at", "-pk"),
    "created": ("created_at", "pk"),
    "-balance": ("-balance", "legal_name", "pk"),
    "balance": ("balance", "legal_name", "pk"),
    "-granted": ("-granted_total", "legal_name", "pk"),
    "-members": ("-members", "legal_name", "pk"),
    "-sandboxes": ("-sandboxes_live", "legal_name", "pk"),
}
STUDENT_ORDERINGS = {
    "email": ("user__email", "pk"),
    "-joined": ("-created_at", "-pk"),
    "joined": ("created_at", "pk"),
    "-balance": ("-balance", "user__email", "pk"),
    "balance": ("balance", "user__email", "pk"),
    "-sandboxes": ("-sandboxes_live", "user__email", "pk"),
}


BY_USAGE = "-used"


class UsageRanked(Sequence):
    """A list "most used this month" for the paginator: `ranking` (credit account ids, the most
    used first) is read once, as the count and the order, and a page of it is read with its
    figures in one query (`figured`, narrowed to the page's accounts by `account`)."""

    def __init__(self, ranking: QuerySet, figured: QuerySet, account: str):
        self.ranking, self.figured, self.account = ranking, figured, account
        self._ids: list[int] | None = None

    def _ranked(self) -> list[int]:
        if self._ids is None:
            self._ids = list(self.ranking)
        return self._ids

    def count(self) -> int:
        return len(self._ranked())

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        ids = self._ranked()[index]
        rows = self.figured.filter(**{f"{self.account}__in": ids}).annotate(
            ranked_account=F(self.account)
        )
        by_account = {row.ranked_account: row for row in rows}
        return [by_account[account_id] for account_id in ids if account_id in by_account]


def _ranked_by_usage(holder_kind: str, narrowed: dict | None = None) -> QuerySet:
    """The credit accounts of `holder_kind` that used GPU time this month, the most first: the
    month's usage roll-ups (one per account and lot rate) summed per account and sorted, never
    their entries. `narrowed`: a lookup on the roll-ups that keeps only the listed holders."""
    return (
        month_rollups(this_month(), this_month())
        .filter(kind=K.USAGE, account__kind=holder_kind, **(narrowed or {}))
        .values("account_id")
        .annotate(used=Sum("amount"))
        .order_by("used", "account_id")  # usage is negative
        .values_list("account_id", flat=True)
    )


def _scalar(queryset: QuerySet, group_by: str, aggregate) -> Coalesce:
    """One number per outer row from a correlated subquery (0 when there are no rows)."""
    subquery = queryset.order_by().values(group_by).annotate(value=aggregate).values("value")[:1]
    return Coalesce(Subquery(subquery, output_field=IntegerField()), Value(0))


def _live_sandboxes(**correlation) -> Coalesce:
    return _scalar(
        Sandbox.objects.filter(status__in=Sandbox.LIVE, **correlation),
        next(iter(correlation)),
        Count("pk"),
    )


# --- Organisations -----------------------------------------------------------------------------


def organisations_with_figures() -> QuerySet[Organisation]:
    """Organisations with `balance`, `granted_total`, `used_this_month` (credit-seconds),
    `members`, `sandboxes_live` and `account_public_id` (None before any credit)."""
    return Organisation.objects.annotate(
        account_public_id=F("credit_account__public_id"),
        balance=Coalesce(F("credit_account__balance"), Value(0)),
        granted_total=_scalar(
            CreditGrant.objects.filter(account_id=OuterRef("credit_account__id")),
            "account_id",
            Sum("amount"),
        ),
        used_this_month=used_in_month("credit_account__id", this_month()),
        members=_scalar(
            Membership.objects.filter(organisation_id=OuterRef("pk")),
            "organisation_id",
            Count("pk"),
        ),
        sandboxes_live=_live_sandboxes(organisation_id=OuterRef("pk")),
    )


def organisations_directory(
    *,
    search: str = "",
    sector: str = "",
    province: str = "",
    status: str = "",
    ordering: str = "name",
) -> QuerySet[Organisation] | UsageRanked:
    """Every organisation, narrowed by name or SECP registration number (CUIN), sector,
    province and active/suspended, in one of ORGANISATION_ORDERINGS, or (BY_USAGE) those that
    used GPU time this month, the most first."""
    organisations = organisations_with_figures()
    search = search.strip()
    if search:
        organisations = organisations.filter(
            Q(legal_name__icontains=search)
            | Q(secp_registration_number__icontains=search)
            | Q(slug__icontains=search)
        )
    if sector:
        organisations = organisations.filter(sector=sector)
    if province:
        organisations = organisations.filter(province=province)
    if status:
        organisations = organisations.filter(is_active=status == ACTIVE)
    if ordering == BY_USAGE:
        narrowed = search or sector or province or status
        ranking = _ranked_by_usage(
            CreditAccount.Kind.ORGANISATION,
            {"account__organisation__in": organisations.values("pk")} if narrowed else None,
        )
        return UsageRanked(ranking, organisations, "credit_account__id")
    return organisations.order_by(
        *ORGANISATION_ORDERINGS.get(ordering, ORGANISATION_ORDERINGS["name"])
    )


def organisation_directory_get(*, public_id) -> Organisation | None:
    """One organisation with the same figures as the list."""
    return organisations_with_figures().filter(public_id=public_id).first()


def grants_listed(*, account: CreditAccount | None) -> QuerySet[CreditGrant]:
    if account is None:
        return CreditGrant.objects.none()
    return account.grants.select_related("application").order_by("-created_at")[:DETAIL_ROWS]


def ledger_recent(*, account: CreditAccount | None) -> QuerySet[LedgerEntry]:
    """The account's latest ledger lines, newest first (the account page has the rest)."""
    if account is None:
        return LedgerEntry.objects.none()
    return (
        LedgerEntry.objects.filter(account=account)
        .select_related("transaction")
        .order_by("-created_at", "-pk")[:RECENT_LEDGER_LINES]
    )


def _live_first(sandboxes: QuerySet[Sandbox]) -> QuerySet[Sandbox]:
    return (
        sandboxes.select_related("user", "image", "profile")
        .annotate(
            not_live=Case(
                When(status__in=Sandbox.LIVE, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("not_live", "-created_at", "-pk")[:DETAIL_ROWS]
    )


def sandboxes_of_organisation(*, organisation: Organisation) -> QuerySet[Sandbox]:
    """The organisation's sandboxes (deleted ones included: they were paid for), live first."""
    return _live_first(Sandbox.objects.filter(organisation=organisation))


def api_keys_of(*, organisation=None, user=None) -> QuerySet[ApiKey]:
    """Service keys of an organisation, or a person's own keys. The secret's hash is never
    read: a page has no use for it."""
    holder = {"organisation": organisation} if organisation is not None else {"user": user}
    return (
        ApiKey.objects.filter(**holder)
        .select_related("organisation", "user")
        .defer("secret_hash")
        .order_by("revoked_at", "-created_at")
    )


def audit_events_about(*, target, account: CreditAccount | None, extra=()) -> list[AuditEvent]:
    """Audit events whose target is this organisation or person, their credit account, or one
    of `extra` (label, ids), newest first."""
    key = getattr(target, "public_id", None) or target.pk
    about = Q(target_type=target._meta.label_lower, target_id=str(key))
    if account is not None:
        about |= Q(target_type=CreditAccount._meta.label_lower, target_id=str(account.public_id))
    for label, ids in extra:
        if ids:
            about |= Q(target_type=label, target_id__in=[str(i) for i in ids])
    return list(AuditEvent.objects.filter(about).order_by("-created_at", "-id")[:DETAIL_ROWS])


def organisation_application_ids(*, organisation: Organisation) -> list:
    return list(organisation.credit_applications.values_list("public_id", flat=True))


# --- Students ----------------------------------------------------------------------------------


def students_with_figures() -> QuerySet[StudentProfile]:
    """Student profiles with their person, university and cohort, and `balance`,
    `used_this_month` (credit-seconds), `sandboxes_live` and `account_public_id`."""
    return StudentProfile.objects.select_related("user", "university", "cohort").annotate(
        account_public_id=F("user__credit_account__public_id"),
        balance=Coalesce(F("user__credit_account__balance"), Value(0)),
        used_this_month=used_in_month("user__credit_account__id", this_month()),
        sandboxes_live=_live_sandboxes(user_id=OuterRef("user_id")),
    )


def students_directory(
    *,
    search: str = "",
    university=None,
    cohort=None,
    status: str = "",
    ordering: str = "email",
) -> QuerySet[StudentProfile] | UsageRanked:
    """Every student, narrowed by e-mail or name, university, cohort and active/suspended, in
    one of STUDENT_ORDERINGS, or (BY_USAGE) those that used GPU time this month, the most
    first."""
    students = students_with_figures()
    search = search.strip()
    if search:
        students = students.filter(
            Q(user__email__icontains=search) | Q(user__name__icontains=search)
        )
    if university is not None:
        students = students.filter(university=university)
    if cohort is not None:
        students = students.filter(cohort=cohort)
    if status:
        students = students.filter(user__is_active=status == ACTIVE)
    if ordering == BY_USAGE:
        narrowed = search or university is not None or cohort is not None or status
        ranking = _ranked_by_usage(
            CreditAccount.Kind.STUDENT,
            {"account__user__student_profile__in": students.values("pk")} if narrowed else None,
        )
        return UsageRanked(ranking, students, "user__credit_account__id")
    return students.order_by(*STUDENT_ORDERINGS.get(ordering, STUDENT_ORDERINGS["email"]))


def student_directory_get(*, hub_username: str) -> StudentProfile | None:
    """One student, named by the hub username (the public, never-changing name of a person)."""
    return students_with_figures().filter(user__hub_username=hub_username).first()


def sandboxes_of_person(*, user: User) -> QuerySet[Sandbox]:
    """Everything the person ran, whoever paid, live first."""
    return _live_first(Sandbox.objects.filter(user=user))


def memberships_of_person(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("organisation")
