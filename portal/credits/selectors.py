"""Reads of the books: balances, lots, statements, the review queue."""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from portal.organisations.models import Organisation

from .charge_metadata import ChargeMetadata, charge_metadata_text
from .models import (
    AccountRollup,
    ApplicationState,
    CreditAccount,
    CreditApplication,
    CreditGrant,
    CreditWarning,
    LedgerEntry,
    LedgerTransaction,
    RollupPeriod,
)
from .units import credit_seconds_to_pkr, month_bounds, months_between

K = LedgerTransaction.Kind


def account_visible_to(*, user, public_id, programme_authority: bool) -> CreditAccount | None:
    """The account, when the person may read it: their organisation's, their own, or any with
    programme-manager authority (the caller says whether the request has it: a programme
    manager in a session that passed MFA). None otherwise."""
    accounts = CreditAccount.objects.select_related("organisation", "user").filter(
        public_id=public_id
    )
    if not programme_authority:
        accounts = accounts.filter(Q(organisation__memberships__user=user) | Q(user=user)).exclude(
            kind=CreditAccount.Kind.SYSTEM
        )
    return accounts.first()


def account_of(*, organisation=None, user=None) -> CreditAccount | None:
    """The credit account of an organisation or of a person (a student's allowance); None when
    none was ever opened. The one way to read it: a writer that needs the account to exist opens
    it with `services.ledger.account_for_organisation` / `account_for_student`."""
    if (organisation is None) == (user is None):
        raise TypeError("account_of() takes an organisation or a user")
    holder = {"organisation": organisation} if organisation is not None else {"user": user}
    return CreditAccount.objects.filter(**holder).first()


def available_credit_seconds(*, account: CreditAccount) -> int:
    """What can still be spent: unexpired lots only (the cached balance may still include a lot
    that expired minutes ago and awaits the expiry job)."""
    total = CreditGrant.objects.filter(
        account=account, remaining__gt=0, expires_at__gt=timezone.now()
    ).aggregate(total=Sum("remaining"))["total"]
    return total or 0


def grant_for_key(*, idempotency_key: str) -> CreditGrant | None:
    """The lot that the transaction with this idempotency key funded, if it was posted."""
    entry = (
        LedgerEntry.objects.filter(
            transaction__idempotency_key=idempotency_key, grant__isnull=False, amount__gt=0
        )
        .select_related("grant")
        .first()
    )
    return entry.grant if entry else None


def grants_of(*, account: CreditAccount) -> QuerySet[CreditGrant]:
    return account.grants.select_related("application").order_by("-created_at")


def warnings_open(*, account: CreditAccount) -> QuerySet[CreditWarning]:
    return CreditWarning.objects.filter(
        grant__account=account, acknowledged_at__isnull=True, grant__remaining__gt=0
    ).select_related("grant")


@dataclass
class OrganisationHistory:
    """What a reviewer needs to know about an applicant."""

    account: CreditAccount | None
    balance: int
    available: int
    granted_total: int
    used_total: int
    grants: list[CreditGrant]
    applications: list[CreditApplication]


def organisation_history(*, organisation: Organisation) -> OrganisationHistory:
    account = account_of(organisation=organisation)
    grants = list(grants_of(account=account)) if account else []
    used = 0
    if account:
        used = -(
            _month_rollups(account).filter(kind=K.USAGE).aggregate(total=Sum("amount"))["total"]
            or 0
        )
    return OrganisationHistory(
        account=account,
        balance=account.balance if account else 0,
        available=available_credit_seconds(account=account) if account else 0,
        granted_total=sum(g.amount for g in grants),
        used_total=used,
        grants=grants,
        applications=list(
            organisation.credit_applications.order_by("-created_at").only(
                "public_id", "title", "state", "requested_gpu_hours", "created_at"
            )
        ),
    )


# --- Review queue ---------------------------------------------------------------------------

QUEUE_STATES = [ApplicationState.SUBMITTED, ApplicationState.IN_REVIEW]


def review_queue(
    *, states: list[str] | None = None, sector: str = "", min_days_waiting: int | None = None
) -> QuerySet[CreditApplication]:
    """Applications waiting for a decision, oldest submission first."""
    applications = CreditApplication.objects.select_related("organisation").filter(
        state__in=states or QUEUE_STATES
    )
    if sector:
        applications = applications.filter(sector=sector)
    if min_days_waiting:
        # Waiting since submission (what the queue shows), not since the last move: starting
        # the review does not make an application younger.
        cutoff = timezone.now() - dt.timedelta(days=min_days_waiting)
        applications = applications.filter(submitted_at__lte=cutoff)
    return applications.order_by("submitted_at", "created_at")


def review_queue_counts() -> dict[str, int]:
    rows = CreditApplication.objects.values("state").annotate(n=Count("pk"))
    return {row["state"]: row["n"] for row in rows}


# --- Statements -----------------------------------------------------------------------------


@dataclass
class StatementLine:
    at: dt.datetime
    kind: str
    kind_label: str
    description: str
    credit_seconds: int
    pkr: Decimal


@dataclass
class Statement:
    account: CreditAccount
    month: dt.date
    opening: int
    opening_pkr: Decimal
    closing: int
    closing_pkr: Decimal
    totals: dict[str, int] = field(default_factory=dict)
    totals_pkr: dict[str, Decimal] = field(default_factory=dict)
    usage_by_sandbox: list["SandboxUsage"] = field(default_factory=list)
    # Model usage (the model API's requests): what the ledger charged for it this month, and
    # its priced cost by model and key (the ledger charges whole credit-seconds of the running
    # total, so the two differ by the fraction carried into or out of the month).
    model_usage: "ModelUsageTotal | None" = None
    usage_by_model: list["ModelUsage"] = field(default_factory=list)
    lines: list[StatementLine] = field(default_factory=list)


@dataclass
class SandboxUsage:
    """A month's usage of one sandbox on one profile. `sandbox` is its public id and `name` the
    name it was charged under (metering records both; of two names, the later in the alphabet),
    blank for usage posted without one."""

    sandbox: str
    name: str
    profile: str
    credit_seconds: int
    pkr: Decimal

    @property
    def label(self) -> str:
        return self.name or self.sandbox


@dataclass
class ModelUsageTotal:
    """A month's model usage as the ledger charged it (negative, as the entries are)."""

    credit_seconds: int
    pkr: Decimal


@dataclass
class ModelUsage:
    """A month's requests to one model through one key (`key` its public id; None for the
    playground), as the model-usage postings recorded them: `microcredits` is their priced
    cost in millionths of a credit-second."""

    model: str
    key: str | None
    key_name: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    microcredits: int

    @property
    def cost_credit_seconds(self) -> Decimal:
        return Decimal(self.microcredits) / 1_000_000

    @property
    def key_label(self) -> str:
        return self.key_name or self.key or ""


STATEMENT_TOTALS = ["grants", "usage", "expiries", "adjustments"]
STATEMENT_GROUPS = {
    K.GRANT: "grants",
    K.ALLOWANCE: "grants",
    K.USAGE: "usage",
    K.EXPIRY: "expiries",
    K.REVOCATION: "adjustments",
    K.ADJUSTMENT: "adjustments",
}


def _value(entries) -> tuple[int, Decimal]:
    """Credit-seconds and their PKR value, each entry at its own lot's rate."""
    seconds, pkr = 0, Decimal(0)
    for amount, rate in entries:
        seconds += amount
        pkr += credit_seconds_to_pkr(amount, rate or Decimal(0))
    return seconds, pkr


def _month_rollups(account: CreditAccount) -> QuerySet[AccountRollup]:
    """A holder account's monthly roll-ups: each of its entries is in exactly one of them."""
    return AccountRollup.objects.filter(account=account, period=RollupPeriod.MONTH)


def _opening(account: CreditAccount, month: dt.date, start: dt.datetime):
    """(credit-seconds, lot rate) sums of everything before the month: a holder's from its
    monthly roll-ups (a few rows a month, however much was charged), a system account's (which
    has none) from its entries."""
    if account.is_system:
        return (
            LedgerEntry.objects.filter(account=account, created_at__lt=start)
            .values("grant__rate_pkr_per_gpu_hour")
            .annotate(seconds=Sum("amount"))
            .values_list("seconds", "grant__rate_pkr_per_gpu_hour")
        )
    return (
        _month_rollups(account)
        .filter(starts__lt=month)
        .values("rate_pkr_per_gpu_hour")
        .annotate(seconds=Sum("amount"))
        .values_list("seconds", "rate_pkr_per_gpu_hour")
    )


def statement_for(*, account: CreditAccount, month: dt.date) -> Statement:
    """The month in full: opening and closing balance, each group's total, the lines.

    GPU-hours and PKR are exact (PKR at each lot's own rate); rounding happens on display.
    Usage arrives every metering interval, so it is summed in the database by sandbox, profile
    and lot rate instead of listed line by line; everything else is listed. The opening balance
    of a holder comes from its roll-ups, so a statement costs the same in a programme's tenth
    year as in its first.
    """
    month = month.replace(day=1)
    start, end = month_bounds(month)
    entries = LedgerEntry.objects.filter(account=account)
    opening, opening_pkr = _value(_opening(account, month, start))
    in_month = entries.filter(created_at__gte=start, created_at__lt=end)
    statement = Statement(
        account=account,
        month=month,
        opening=opening,
        opening_pkr=opening_pkr,
        closing=opening,
        closing_pkr=opening_pkr,
        totals=dict.fromkeys(STATEMENT_TOTALS, 0),
        totals_pkr=dict.fromkeys(STATEMENT_TOTALS, Decimal(0)),
    )

    def add(group: str, seconds: int, pkr: Decimal) -> None:
        statement.totals[group] += seconds
        statement.totals_pkr[group] += pkr
        statement.closing += seconds
        statement.closing_pkr += pkr

    usage_rows = (
        in_month.filter(kind=K.USAGE)
        .exclude(transaction__metadata__has_key="model_usage")
        .annotate(sandbox=charge_metadata_text("sandbox"), profile=charge_metadata_text("profile"))
        .values("sandbox", "profile", "grant__rate_pkr_per_gpu_hour")
        .annotate(seconds=Sum("amount"), name=Max(charge_metadata_text("sandbox_name")))
        .order_by("sandbox", "profile")
    )
    usage: dict[tuple[str, str], SandboxUsage] = {}
    for row in usage_rows:
        pkr = credit_seconds_to_pkr(row["seconds"], row["grant__rate_pkr_per_gpu_hour"] or 0)
        sandbox, profile = row["sandbox"] or "", row["profile"] or ""
        line = usage.setdefault(
            (sandbox, profile), SandboxUsage(sandbox, "", profile, 0, Decimal(0))
        )
        line.name = max(line.name, row["name"] or "")
        line.credit_seconds += row["seconds"]
        line.pkr += pkr
        add("usage", row["seconds"], pkr)
    statement.usage_by_sandbox = list(usage.values())

    model_rows = (
        in_month.filter(kind=K.USAGE, transaction__metadata__has_key="model_usage")
        .values("grant__rate_pkr_per_gpu_hour")
        .annotate(seconds=Sum("amount"))
        .values_list("seconds", "grant__rate_pkr_per_gpu_hour")
    )
    if model_rows:
        seconds, pkr = _value(model_rows)
        statement.model_usage = ModelUsageTotal(seconds, pkr)
        add("usage", seconds, pkr)
        statement.usage_by_model = _model_usage_lines(account, start, end)

    for entry in (
        in_month.exclude(kind=K.USAGE)
        .select_related("transaction", "grant")
        .order_by("created_at", "pk")
    ):
        txn = entry.transaction
        rate = entry.grant.rate_pkr_per_gpu_hour if entry.grant else Decimal(0)
        pkr = credit_seconds_to_pkr(entry.amount, rate)
        add(STATEMENT_GROUPS[txn.kind], entry.amount, pkr)
        statement.lines.append(
            StatementLine(
                at=entry.created_at,
                kind=txn.kind,
                kind_label=txn.get_kind_display(),
                description=txn.description,
                credit_seconds=entry.amount,
                pkr=pkr,
            )
        )
    return statement


def _model_usage_lines(account: CreditAccount, start, end) -> list[ModelUsage]:
    """The month's model-usage postings summed by model and key, from their metadata (one
    posting per account per interval, each with a few items: summed in the database on
    PostgreSQL, in Python elsewhere)."""
    txn_ids = (
        LedgerEntry.objects.filter(
            account=account, kind=K.USAGE, created_at__gte=start, created_at__lt=end
        )
        .order_by()
        .values("transaction_id")
    )
    lines: dict[tuple, ModelUsage] = {}
    if connection.vendor == "postgresql":
        ids_sql, ids_params = txn_ids.query.sql_with_params()
        table = LedgerTransaction._meta.db_table
        # Only names from the model's metadata are interpolated; every value is a parameter.
        sql = (
            "SELECT item->>'model', item->>'key', max(item->>'key_name'), "  # noqa: S608
            "sum((item->>'requests')::bigint), sum((item->>'prompt_tokens')::bigint), "
            "sum((item->>'completion_tokens')::bigint), sum((item->>'microcredits')::bigint) "
            f"FROM {table} t CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN "
            "jsonb_typeof(t.metadata->'model_usage') = 'array' THEN t.metadata->'model_usage' "
            "ELSE '[]'::jsonb END) AS item "
            f"WHERE t.id IN ({ids_sql}) GROUP BY 1, 2 ORDER BY 1, 2 NULLS FIRST"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, ids_params)
            rows = cursor.fetchall()
        return [
            ModelUsage(m or "", k, n or "", *(int(v or 0) for v in rest)) for m, k, n, *rest in rows
        ]
    for metadata in LedgerTransaction.objects.filter(pk__in=txn_ids).values_list(
        "metadata", flat=True
    ):
        for item in ChargeMetadata.from_json(metadata).model_usage or []:
            line = lines.setdefault(
                (item.get("model") or "", item.get("key")),
                ModelUsage(item.get("model") or "", item.get("key"), "", 0, 0, 0, 0),
            )
            line.key_name = max(line.key_name, item.get("key_name") or "")
            line.requests += int(item.get("requests") or 0)
            line.prompt_tokens += int(item.get("prompt_tokens") or 0)
            line.completion_tokens += int(item.get("completion_tokens") or 0)
            line.microcredits += int(item.get("microcredits") or 0)
    return sorted(lines.values(), key=lambda line: (line.model, line.key or ""))


def statement_months(*, account: CreditAccount) -> list[dt.date]:
    """Every month from the account's first entry to this one, newest first."""
    today = timezone.localdate()
    if account.is_system:
        first = LedgerEntry.objects.filter(account=account).order_by("created_at").first()
        first_day = timezone.localtime(first.created_at).date() if first else None
    else:
        first_day = _month_rollups(account).aggregate(first=Min("starts"))["first"]
    if first_day is None:
        return [today.replace(day=1)]
    return list(reversed(months_between(first_day, today)))
