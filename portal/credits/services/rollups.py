"""Roll-ups of the ledger: the sums programme pages read instead of the entries.

Two tables, two writers:

- AccountRollup (a holder account's entries per local day and month, kind and lot rate) is
  written by the posting module with the postings, in their transaction. Here it is only
  *recomputed*: `account_rollups_rebuild` makes it equal to the entries again (the command
  `credits_rollups_rebuild`), and `account_rollups_reconcile` compares a random sample of
  accounts with their entries each night and audits any drift.
- ProgrammeRollup (per local month, and per local day for the whole programme; per report
  dimension value, holder kind, kind and rate) is built from AccountRollup, never from the
  ledger, by `rollups_refresh`: on beat every CREDITS_ROLLUP_REFRESH_SECONDS, and soon after
  every grant, adjustment, revocation and expiry run (`rollups_refresh_soon`), so only usage
  lags the ledger, by at most the interval.

Days and months are local (settings.TIME_ZONE, as `units.month_bounds` cuts them): a roll-up
row is named by the local date its day or month starts on.
"""

import datetime as dt
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from portal.audit.actions import AuditAction
from portal.audit.services import audit_record

from ..models import (
    AccountRollup,
    CreditAccount,
    LedgerEntry,
    ProgrammeRollup,
    ProgrammeRollupRefresh,
    RollupDimension,
    RollupPeriod,
)
from ..units import month_bounds, month_next, months_between

logger = logging.getLogger(__name__)

# A posting made just before a month ended may commit a moment after it: a month refreshed this
# long after its end has every entry it will ever have.
FINAL_AFTER = dt.timedelta(minutes=5)
REBUILD_BATCH_ACCOUNTS = 500
HOLDER_KINDS = [CreditAccount.Kind.ORGANISATION, CreditAccount.Kind.STUDENT]

# (account, period, starts, kind, rate) -> [amount, entries]
Sums = dict[tuple[int, str, dt.date, str, Decimal], list[int]]


def month_of(day: dt.date) -> dt.date:
    return day.replace(day=1)


# --- AccountRollup, recomputed from the entries ---------------------------------------------


def account_rollups_expected(*, account_ids: Iterable[int]) -> Sums:
    """What these holder accounts' roll-ups must hold, summed again from their entries (the
    database sums per account, local day, kind and rate; the days are folded into months here)."""
    daily = (
        LedgerEntry.objects.filter(account_id__in=list(account_ids), account__kind__in=HOLDER_KINDS)
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_default_timezone()))
        .values("account_id", "day", "kind", "grant__rate_pkr_per_gpu_hour")
        .annotate(amount=Sum("amount"), entries=Count("pk"))
        .order_by()
    )
    sums: Sums = defaultdict(lambda: [0, 0])
    for row in daily:
        rate = row["grant__rate_pkr_per_gpu_hour"]
        for period, starts in (
            (RollupPeriod.DAY, row["day"]),
            (RollupPeriod.MONTH, month_of(row["day"])),
        ):
            total = sums[(row["account_id"], period, starts, row["kind"], rate)]
            total[0] += row["amount"]
            total[1] += row["entries"]
    return dict(sums)


def account_rollups_stored(*, account_ids: Iterable[int]) -> Sums:
    rows = AccountRollup.objects.filter(account_id__in=list(account_ids)).values_list(
        "account_id", "period", "starts", "kind", "rate_pkr_per_gpu_hour", "amount", "entries"
    )
    return {tuple(row[:5]): [row[5], row[6]] for row in rows}


# On PostgreSQL, one account range at a time: lock the accounts (as a posting would, in
# primary-key order), then sum their entries and make the rows equal to the sums. Rows already
# right are not touched, so a second run changes nothing.
_REBUILD_RANGE_SQL = """
WITH fresh AS (
    SELECT e.account_id, p.period, p.starts, e.kind, g.rate_pkr_per_gpu_hour AS rate,
           sum(e.amount)::bigint AS amount, count(*) AS entries
    FROM credits_ledgerentry e
    JOIN credits_creditaccount a ON a.id = e.account_id AND a.kind <> 'system'
    JOIN credits_creditgrant g ON g.id = e.grant_id
    CROSS JOIN LATERAL (
        SELECT credits_local_day(e.created_at) AS day
    ) AS d
    CROSS JOIN LATERAL (
        VALUES ('day', d.day), ('month', d.day - (extract(day FROM d.day)::integer - 1))
    ) AS p(period, starts)
    WHERE e.account_id BETWEEN %(low)s AND %(high)s
    GROUP BY e.account_id, p.period, p.starts, e.kind, g.rate_pkr_per_gpu_hour
),
upserted AS (
    INSERT INTO credits_accountrollup AS r
        (account_id, period, starts, kind, rate_pkr_per_gpu_hour, amount, entries)
    SELECT account_id, period, starts, kind, rate, amount, entries FROM fresh
    ON CONFLICT (account_id, period, starts, kind, rate_pkr_per_gpu_hour)
    DO UPDATE SET amount = excluded.amount, entries = excluded.entries
    WHERE (r.amount, r.entries) IS DISTINCT FROM (excluded.amount, excluded.entries)
    RETURNING 1
),
removed AS (
    DELETE FROM credits_accountrollup r
    WHERE r.account_id BETWEEN %(low)s AND %(high)s
      AND NOT EXISTS (
          SELECT 1 FROM fresh f
          WHERE f.account_id = r.account_id AND f.period = r.period AND f.starts = r.starts
            AND f.kind = r.kind AND f.rate = r.rate_pkr_per_gpu_hour
      )
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM removed)
"""


def account_rollups_rebuild(*, batch: int = REBUILD_BATCH_ACCOUNTS) -> int:
    """Make every holder account's roll-ups equal to its entries, `batch` accounts at a time,
    each batch in its own transaction under its accounts' row locks (postings to them wait for
    it; the others go on). Idempotent. Returns how many rows it wrote or removed."""
    holders = CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM)
    ids = list(holders.order_by("pk").values_list("pk", flat=True))
    changed = 0
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        with transaction.atomic():
            # The UPDATE-free lock a posting's balance UPDATE would wait for, in its order.
            list(holders.filter(pk__in=chunk).order_by("pk").select_for_update().values("pk"))
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(_REBUILD_RANGE_SQL, {"low": chunk[0], "high": chunk[-1]})
                    changed += cursor.fetchone()[0]
            else:
                changed += _rollups_make_equal(chunk)
    # Rows of accounts past the last holder (none are made by the writers; a planted one is).
    changed += AccountRollup.objects.exclude(account__in=holders).delete()[0]
    return changed


def _rollups_make_equal(account_ids: list[int]) -> int:
    """The ORM's way to what _REBUILD_RANGE_SQL does: write the rows that differ, remove the
    rows no entry explains."""
    expected = account_rollups_expected(account_ids=account_ids)
    stored = account_rollups_stored(account_ids=account_ids)
    changed = 0
    for key, (amount, entries) in expected.items():
        if stored.get(key) == [amount, entries]:
            continue
        account_id, period, starts, kind, rate = key
        AccountRollup.objects.update_or_create(
            account_id=account_id,
            period=period,
            starts=starts,
            kind=kind,
            rate_pkr_per_gpu_hour=rate,
            defaults={"amount": amount, "entries": entries},
        )
        changed += 1
    for key in stored.keys() - expected.keys():
        account_id, period, starts, kind, rate = key
        AccountRollup.objects.filter(
            account_id=account_id,
            period=period,
            starts=starts,
            kind=kind,
            rate_pkr_per_gpu_hour=rate,
        ).delete()
        changed += 1
    return changed


def account_rollups_reconcile(*, sample: int = 200, rng: random.Random | None = None) -> dict:
    """Compare the roll-ups of a random sample of holder accounts with their entries, as the
    nightly reconciliation does. A difference is never corrected here: each drifting account
    is logged as an error and audited (the rebuild command corrects, when a person has looked).
    Returns {"accounts": sampled, "drift": [...]}."""
    rng = rng or random.SystemRandom()
    ids = list(
        CreditAccount.objects.exclude(kind=CreditAccount.Kind.SYSTEM).values_list("pk", flat=True)
    )
    chosen = sorted(rng.sample(ids, min(sample, len(ids))))
    drift = []
    # Under the sampled accounts' row locks: a posting in flight cannot look like drift.
    with transaction.atomic():
        list(
            CreditAccount.objects.filter(pk__in=chosen)
            .order_by("pk")
            .select_for_update()
            .values("pk")
        )
        expected = account_rollups_expected(account_ids=chosen)
        stored = account_rollups_stored(account_ids=chosen)
    for key in sorted(expected.keys() | stored.keys(), key=str):
        want, have = expected.get(key, [0, 0]), stored.get(key, [0, 0])
        if want != have:
            account_id, period, starts, kind, rate = key
            drift.append(
                {
                    "account": account_id,
                    "period": period,
                    "starts": starts.isoformat(),
                    "kind": kind,
                    "rate_pkr_per_gpu_hour": str(rate),
                    "ledger": {"amount": want[0], "entries": want[1]},
                    "rollup": {"amount": have[0], "entries": have[1]},
                }
            )
    for item in drift:
        logger.error("credits roll-up drift: %s", item)
        audit_record(actor=None, action=AuditAction.CREDITS_ROLLUP_DRIFT, data=item)
    return {"accounts": len(chosen), "drift": drift}


# --- ProgrammeRollup, built from AccountRollup ----------------------------------------------

STUDENTS, ORGANISATIONS, NONE = "~students", "~organisations", "~none"
_STUDENT = "account__user__student_profile__"
# The column each dimension reads (besides the holder kind), named by lookup: credits imports
# nothing above it, and a student's university and cohort are the onboarding app's.
_DIMENSION_FIELD = {
    RollupDimension.PROGRAMME: None,
    RollupDimension.SECTOR: "account__organisation__sector",
    RollupDimension.PROVINCE: "account__organisation__province",
    RollupDimension.UNIVERSITY: f"{_STUDENT}university__name",
    RollupDimension.COHORT: f"{_STUDENT}cohort__public_id",
}


def _dimension_key(dimension: str, holder_kind: str, value) -> str:
    """The row's key: the dimension's value, or the catch-all of holders it does not describe
    (as the programme reports name them)."""
    if dimension == RollupDimension.PROGRAMME:
        return ""
    if dimension in (RollupDimension.SECTOR, RollupDimension.PROVINCE):
        return STUDENTS if holder_kind == CreditAccount.Kind.STUDENT else value
    if holder_kind == CreditAccount.Kind.ORGANISATION:
        return ORGANISATIONS
    return NONE if value is None else str(value)


def _programme_rows(period: str, starts_from: dt.date, starts_to: dt.date, dimensions):
    """ProgrammeRollup rows for the accounts' roll-ups of `period` starting in [from, to)."""
    rollups = AccountRollup.objects.filter(
        period=period, starts__gte=starts_from, starts__lt=starts_to
    )
    rows = []
    for dimension in dimensions:
        field = _DIMENSION_FIELD[dimension]
        columns = ["starts", "account__kind", "kind", "rate_pkr_per_gpu_hour"]
        grouped = (
            rollups.values(*columns, *([field] if field else []))
            .annotate(amount=Sum("amount"), entries=Sum("entries"), holders=Count("account_id"))
            .order_by()
        )
        for group in grouped:
            holder_kind = group["account__kind"]
            rows.append(
                ProgrammeRollup(
                    period=period,
                    starts=group["starts"],
                    dimension=dimension,
                    key=_dimension_key(dimension, holder_kind, group.get(field)),
                    holder_kind=holder_kind,
                    kind=group["kind"],
                    rate_pkr_per_gpu_hour=group["rate_pkr_per_gpu_hour"],
                    amount=group["amount"],
                    entries=group["entries"],
                    holders=group["holders"],
                )
            )
    return rows


def programme_month_refresh(*, month: dt.date, now: dt.datetime | None = None) -> int:
    """Replace one local month's programme roll-ups (every dimension) and its days' (the whole
    programme), from the accounts' roll-ups, in one transaction. Returns the rows written."""
    month = month_of(month)
    now = now or timezone.now()
    following = month_next(month)
    days = [month + dt.timedelta(days=n) for n in range((following - month).days)]
    with transaction.atomic():
        # One refresh of a month at a time (the beat's and one queued after a grant can meet,
        # and would both insert its rows): the month's refresh row is locked first, and the
        # sums are read once the lock is granted, so the later one sees what the earlier wrote.
        ProgrammeRollupRefresh.objects.get_or_create(
            period=RollupPeriod.MONTH, starts=month, defaults={"refreshed_at": now}
        )
        ProgrammeRollupRefresh.objects.select_for_update().get(
            period=RollupPeriod.MONTH, starts=month
        )
        rows = _programme_rows(
            RollupPeriod.MONTH, month, following, list(RollupDimension.values)
        ) + _programme_rows(RollupPeriod.DAY, month, following, [RollupDimension.PROGRAMME])
        ProgrammeRollup.objects.filter(period=RollupPeriod.MONTH, starts=month).delete()
        ProgrammeRollup.objects.filter(
            period=RollupPeriod.DAY, starts__gte=month, starts__lt=following
        ).delete()
        ProgrammeRollup.objects.bulk_create(rows, batch_size=1000)
        for period, starts in [(RollupPeriod.MONTH, month)] + [(RollupPeriod.DAY, d) for d in days]:
            ProgrammeRollupRefresh.objects.update_or_create(
                period=period, starts=starts, defaults={"refreshed_at": now}
            )
    return len(rows)


def months_to_refresh(*, now: dt.datetime) -> list[dt.date]:
    """This month, and every earlier one since the first roll-up that was not refreshed since
    it closed (and the grace after): once such a refresh ran, a month is final."""
    current = month_of(timezone.localdate(now))
    first = AccountRollup.objects.filter(period=RollupPeriod.MONTH).aggregate(first=Min("starts"))
    final = {
        starts
        for starts, refreshed_at in ProgrammeRollupRefresh.objects.filter(
            period=RollupPeriod.MONTH, starts__lt=current
        ).values_list("starts", "refreshed_at")
        if refreshed_at >= month_bounds(starts)[1] + FINAL_AFTER
    }
    return [m for m in months_between(first["first"] or current, current) if m not in final]


def rollups_refresh(*, months: Iterable[dt.date] | None = None) -> list[dt.date]:
    """Refresh the programme roll-ups of these months (by default, `months_to_refresh`).
    Idempotent: the same accounts' roll-ups give the same rows. Returns the months refreshed."""
    now = timezone.now()
    chosen = sorted({month_of(m) for m in months}) if months is not None else None
    chosen = chosen if chosen is not None else months_to_refresh(now=now)
    for month in chosen:
        programme_month_refresh(month=month, now=now)
    return chosen


def rollups_rebuild() -> tuple[int, list[dt.date]]:
    """The whole of both tables again from the ledger: accounts' roll-ups, then every month's
    programme roll-ups (and those of months that no longer have any are removed)."""
    changed = account_rollups_rebuild()
    bounds = AccountRollup.objects.aggregate(first=Min("starts"), last=Max("starts"))
    if bounds["first"] is None:
        months = []
        ProgrammeRollup.objects.all().delete()
    else:
        months = months_between(bounds["first"], bounds["last"])
        ProgrammeRollup.objects.exclude(
            starts__gte=months[0], starts__lt=month_next(months[-1])
        ).delete()
    rollups_refresh(months=months)
    return changed, months


REFRESH_SOON_KEY = "credits:rollups-refresh-queued"
REFRESH_SOON_SECONDS = 5


def rollups_refresh_soon() -> None:
    """After this transaction commits, refresh the programme roll-ups within a few seconds:
    for grants, adjustments, revocations and expiry runs, which are rare, so that pages do not
    wait for the beat. Many in a row (a month's student allowances) share one refresh: whoever
    finds no refresh queued queues one, a few seconds out, and it sees every commit made
    before it starts."""
    transaction.on_commit(_refresh_queue)


def rollups_refresh_mark_clear() -> None:
    """A refresh is starting: the next commit must queue another (see rollups_refresh_soon)."""
    cache.delete(REFRESH_SOON_KEY)


def _refresh_queue() -> None:
    if cache.add(REFRESH_SOON_KEY, 1, timeout=REFRESH_SOON_SECONDS):
        from ..tasks import rollups_refresh_task  # noqa: PLC0415 - tasks import the services

        rollups_refresh_task.apply_async(countdown=REFRESH_SOON_SECONDS)
