"""The only writer of ledger rows (transactions, entries, and the balances and lots they move).

It has two doors, both in credits.services, which validate before they call it:

- `ledger_post`: any balanced transaction (grants, revocations, expiries, adjustments);
- `usage_charge_batch`: the usage charges of a metering tick, all in one statement
  (`usage_charge`, one charge, is its one-item case).

The locked part of a posting (holder balances, lots, entries) has two implementations that
must agree, and the same tests run against both:

- PostgreSQL: the functions in credits/sql/, one per file. Inside the caller's transaction,
  `credits_apply_postings`; outside any transaction, `credits_post`, which also inserts the
  transaction row and is committed by the server at the end of that one statement; a holder
  paying a system account out of its lots (every usage charge) goes to the flatter
  `credits_post_debit`, which holds the account's lock for less, and a batch of usage charges
  to `credits_post_usage`, which posts each through it. The holder account's row lock is then
  held for the work itself, not for a conversation between Python and the database: that is
  what lets one busy account take over a thousand debits a second. Inside the functions every
  statement sees what committed before it, so lots are read after the account lock is granted.
- Anything else (SQLite, the embedded default): the same steps through the ORM; SQLite has one
  writer at a time anyway. A batch of usage charges is then posted one by one through
  `ledger_post`.

Both add every holder leg to its account's roll-ups (AccountRollup: per local day and month,
kind and lot rate) in the same transaction, under the account's row lock the posting holds
already: `credits_rollup_add` on PostgreSQL, `_rollups_add` through the ORM. The usage batch
posts each charge through `credits_post_debit`, so each holder leg is counted exactly once.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import DatabaseError, connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from psycopg.types.json import Jsonb

from .models import (
    AccountRollup,
    CreditAccount,
    CreditGrant,
    LedgerEntry,
    LedgerTransaction,
    RollupPeriod,
)

# SQLSTATEs raised by the functions in credits/sql/ (class "NC", ours).
INSUFFICIENT = "NC001"
UNKNOWN_ACCOUNT = "NC002"
WRONG_LOT = "NC003"


class PostingRefused(Exception):  # noqa: N818 - services turns it into a user-facing error
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DrawnLot:
    """A lot a transaction took credits from, as it stands afterwards (for warnings)."""

    grant_id: int
    remaining: int
    amount: int


def insert_transaction(txn: LedgerTransaction) -> bool:
    """Insert the transaction row unless its idempotency key exists: True when inserted.

    One statement (INSERT ... ON CONFLICT DO NOTHING), no savepoint. A concurrent insert of the
    same key makes this wait for the other transaction, then do nothing if it committed.
    """
    meta = LedgerTransaction._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    params = [f.get_db_prep_save(f.pre_save(txn, add=True), connection) for f in fields]
    # Only names from the model's own metadata are interpolated; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({quote('idempotency_key')}) DO NOTHING RETURNING {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    mark_saved(txn, row[0])
    return True


def mark_saved(txn: LedgerTransaction, pk: int) -> None:
    """The transaction object is now the row inserted with this primary key."""
    txn.pk = pk
    txn._state.adding = False
    txn._state.db = connection.alias


def post_in_one_statement(txn: LedgerTransaction, postings: Sequence) -> list[DrawnLot] | None:
    """PostgreSQL, outside any transaction: insert and apply in one autocommitted statement.

    Returns the drawn lots, or None when the idempotency key was posted before (nothing was
    written). A refusal raises PostingRefused; the server has already rolled it back.
    """
    # The row's own values, as LedgerTransaction's fields would store them (public_id and
    # created_at are set by the caller; metadata is a JSON object).
    params = [
        txn.public_id,
        txn.idempotency_key,
        txn.kind,
        txn.description,
        Jsonb(txn.metadata),
        txn.created_by_id,
        txn.created_at,
    ]
    debit = _debit_of(postings)
    if debit is not None:
        rows = _call(
            "SELECT transaction_id, grant_id, remaining, amount FROM credits_post_debit("
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [*params, *debit],
        )
    else:
        rows = _call(
            "SELECT transaction_id, grant_id, remaining, amount FROM credits_post("
            "%s, %s, %s, %s, %s, %s, %s, %s::bigint[], %s::bigint[], %s::bigint[], %s::boolean[])",
            [*params, *_posting_arrays(postings)],
        )
    if rows[0][0] is None:
        return None
    mark_saved(txn, rows[0][0])
    return _drawn(row[1:] for row in rows[1:])


@dataclass(frozen=True)
class UsagePosted:
    """What `post_usage_batch` did with one item."""

    transaction_id: int | None  # None: nothing charged (the account had nothing left)
    charged: int
    replayed: bool  # the key was posted before: `transaction_id` is that first transaction
    drawn: list[DrawnLot]


def post_usage_batch(
    *, usage_account_id: int, description: str, at, items: Sequence, partial: bool
) -> list[UsagePosted]:
    """PostgreSQL, outside any transaction: many usage charges in one statement
    (`credits_post_usage`). `items` are (public_id, key, metadata, account_id, amount), sorted
    by account. With `partial`, an account that cannot pay an item in full pays what it holds;
    without, a shortfall raises PostingRefused(INSUFFICIENT) and nothing is written. Returns one
    UsagePosted per item, in order."""
    rows = _call(
        "SELECT item, transaction_id, charged, replayed, grant_id, remaining, amount "
        "FROM credits_post_usage(%s, %s, %s, %s::uuid[], %s::varchar[], %s::jsonb[], "
        "%s::bigint[], %s::bigint[], %s)",
        [
            usage_account_id,
            description,
            at,
            [item[0] for item in items],
            [item[1] for item in items],
            [Jsonb(item[2]) for item in items],
            [item[3] for item in items],
            [item[4] for item in items],
            partial,
        ],
    )
    results: dict[int, tuple] = {}
    lots: dict[int, list] = {}
    for item, transaction_id, charged, replayed, grant_id, remaining, amount in rows:
        results.setdefault(item, (transaction_id, charged, replayed))
        if grant_id is not None:
            lots.setdefault(item, []).append((grant_id, remaining, amount))
    return [
        UsagePosted(*results[item], _drawn(lots.get(item, ()))) for item in range(1, len(items) + 1)
    ]


def _debit_of(postings: Sequence) -> tuple[int, int, int] | None:
    """(holder, system account, amount) when the postings are one holder paying one system
    account out of the lots that expire first, the shape `credits_post_debit` takes; else None.
    The postings are already validated: they sum to zero and name existing accounts."""
    if len(postings) != 2:
        return None
    holder, system = postings if postings[1].account.is_system else postings[::-1]
    if holder.account.is_system or not system.account.is_system or holder.grant is not None:
        return None
    if holder.amount >= 0:
        return None
    return holder.account.pk, system.account.pk, system.amount


def _posting_arrays(postings: Sequence) -> list[str]:
    """The postings as four PostgreSQL array literals ('{1,2}'), cast in the SQL.

    Integers and booleans only, formatted here: adapting Python lists element by element cost
    more than the rest of a debit's Python work together.
    """

    def literal(values) -> str:
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"

    return [
        literal(p.account.pk for p in postings),
        literal(p.amount for p in postings),
        literal(p.grant.pk if p.grant is not None else None for p in postings),
        "{" + ",".join("t" if not p.account.is_system else "f" for p in postings) + "}",
    ]


def _server_binding_cursor():
    """A Django cursor (query logging, execute wrappers and error translation all apply) whose
    parameters are bound by the server, as with Django's OPTIONS["server_side_binding"], for
    this module's function calls only. Django's default cursor quotes every argument into the
    SQL text for the server to parse back: for a debit that is about a third of the client's
    work and much of the server's before the account lock. No statement is prepared by name
    (Django leaves prepare_threshold off), so a transaction-pooling PgBouncer stays safe."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        raw = ServerBindingCursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)
    return connection.make_cursor(raw)


def _call(sql: str, params: list) -> list[tuple]:
    try:
        with _server_binding_cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except DatabaseError as error:
        sqlstate = getattr(error.__cause__, "sqlstate", None)
        if sqlstate in (INSUFFICIENT, UNKNOWN_ACCOUNT, WRONG_LOT):
            raise PostingRefused(sqlstate) from error
        raise


def _drawn(rows) -> list[DrawnLot]:
    """One DrawnLot per lot, as it stands after the last draw on it."""
    lots: dict[int, DrawnLot] = {}
    for grant_id, remaining, amount in rows:
        lots[grant_id] = DrawnLot(grant_id, remaining, amount)
    return list(lots.values())


def one_statement_possible() -> bool:
    """PostgreSQL, and no transaction open: nothing else the caller wrote needs to commit with
    the posting, so the database may commit it by itself."""
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def insert_and_apply(txn: LedgerTransaction, postings: Sequence) -> list[DrawnLot] | None:
    """Inside the caller's transaction: the row, then the postings. None for a replayed key."""
    if not insert_transaction(txn):
        return None
    if connection.vendor == "postgresql":
        return _apply_postgresql(txn, postings)
    return _apply_orm(txn, postings)


def _apply_postgresql(txn: LedgerTransaction, postings: Sequence) -> list[DrawnLot]:
    rows = _call(
        "SELECT grant_id, remaining, amount FROM credits_apply_postings("
        "%s, %s, %s, %s::bigint[], %s::bigint[], %s::bigint[], %s::boolean[])",
        [txn.pk, txn.kind, txn.created_at, *_posting_arrays(postings)],
    )
    return _drawn(rows)


# --- The same steps through the ORM -----------------------------------------------------------


def _apply_orm(txn: LedgerTransaction, postings: Sequence) -> list[DrawnLot]:
    known = dict(
        CreditAccount.objects.filter(pk__in={p.account.pk for p in postings}).values_list(
            "pk", "kind"
        )
    )
    for posting in postings:
        is_system = known.get(posting.account.pk) == CreditAccount.Kind.SYSTEM
        if posting.account.pk not in known or is_system != posting.account.is_system:
            raise PostingRefused(UNKNOWN_ACCOUNT)

    deltas: dict[int, int] = defaultdict(int)
    for posting in postings:
        if not posting.account.is_system:
            deltas[posting.account.pk] += posting.amount
    for account_pk in sorted(deltas):  # primary-key order: the UPDATE takes the row lock
        delta = deltas[account_pk]
        if not CreditAccount.objects.filter(pk=account_pk, balance__gte=-delta).update(
            balance=F("balance") + delta
        ):
            raise PostingRefused(INSUFFICIENT)

    entries, lot_deltas, debited = [], defaultdict(int), []
    for posting in postings:
        account = posting.account
        if account.is_system or posting.amount > 0:
            if posting.grant is not None:
                lot_deltas[posting.grant.pk] += posting.amount
            entries.append((account.pk, getattr(posting.grant, "pk", None), posting.amount))
            continue
        for grant_pk, take in _draw(account.pk, -posting.amount, posting.grant, lot_deltas, txn):
            lot_deltas[grant_pk] -= take
            debited.append(grant_pk)
            entries.append((account.pk, grant_pk, -take))
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            transaction=txn,
            account_id=a,
            grant_id=g,
            amount=amount,
            kind=txn.kind,
            created_at=txn.created_at,
        )
        for a, g, amount in entries
    )
    for grant_pk, delta in sorted(lot_deltas.items()):
        CreditGrant.objects.filter(pk=grant_pk).update(remaining=F("remaining") + delta)
    lots = CreditGrant.objects.in_bulk([g for a, g, _amount in entries if g is not None])
    holder_legs = [(a, lots[g].rate_pkr_per_gpu_hour, amount) for a, g, amount in entries if g]
    _rollups_add(txn, holder_legs)
    return [DrawnLot(pk, lots[pk].remaining, lots[pk].amount) for pk in dict.fromkeys(debited)]


def _rollups_add(txn: LedgerTransaction, legs: Sequence[tuple[int, Decimal, int]]) -> None:
    """What credits_rollup_add does: add the holder legs (account, lot rate, amount) to their
    accounts' roll-ups for the local day and month of the transaction. The accounts' rows were
    locked above by the balance UPDATE, so the read-then-write cannot race another posting.

    A transaction adds the same sum to its day's row and its month's, so one UPDATE serves
    both; only a row not there yet (a new day, kind or rate) costs more."""
    day = timezone.localtime(txn.created_at).date()
    periods = {RollupPeriod.DAY: day, RollupPeriod.MONTH: day.replace(day=1)}
    sums: dict[tuple[int, Decimal], list[int]] = defaultdict(lambda: [0, 0])
    for account_pk, rate, amount in legs:
        sums[(account_pk, rate)][0] += amount
        sums[(account_pk, rate)][1] += 1
    for (account_pk, rate), (amount, count) in sums.items():
        rows = AccountRollup.objects.filter(
            Q(period=RollupPeriod.DAY, starts=periods[RollupPeriod.DAY])
            | Q(period=RollupPeriod.MONTH, starts=periods[RollupPeriod.MONTH]),
            account_id=account_pk,
            kind=txn.kind,
            rate_pkr_per_gpu_hour=rate,
        )
        if rows.update(amount=F("amount") + amount, entries=F("entries") + count) == 2:
            continue
        present = set(rows.values_list("period", flat=True))
        AccountRollup.objects.bulk_create(
            AccountRollup(
                account_id=account_pk,
                period=period,
                starts=starts,
                kind=txn.kind,
                rate_pkr_per_gpu_hour=rate,
                amount=amount,
                entries=count,
            )
            for period, starts in periods.items()
            if period not in present
        )


def _draw(account_pk, amount, grant, pending, txn) -> list[tuple[int, int]]:
    """Split a debit over lots, the one expiring first first: [(grant_pk, seconds), ...].

    `pending` holds this transaction's not-yet-written changes to lots, so two debits on one
    account in one transaction never draw the same credit-seconds twice.
    """
    if grant is not None:
        remaining = CreditGrant.objects.filter(pk=grant.pk, account_id=account_pk).values_list(
            "remaining", flat=True
        )
        if not remaining:
            raise PostingRefused(WRONG_LOT)
        if remaining[0] + pending.get(grant.pk, 0) < amount:
            raise PostingRefused(INSUFFICIENT)
        return [(grant.pk, amount)]
    lots = CreditGrant.objects.filter(
        account_id=account_pk, remaining__gt=0, expires_at__gt=txn.created_at
    ).order_by("expires_at", "pk")
    draws, needed = [], amount
    for lot in lots:
        take = min(lot.remaining + pending.get(lot.pk, 0), needed)
        if take > 0:
            draws.append((lot.pk, take))
            needed -= take
        if not needed:
            return draws
    raise PostingRefused(INSUFFICIENT)


REFUSALS = {
    INSUFFICIENT: lambda: _("Not enough GPU credits for this."),
    UNKNOWN_ACCOUNT: lambda: _("Every entry needs an existing account."),
    WRONG_LOT: lambda: _("That grant belongs to another account."),
}
