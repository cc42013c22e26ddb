"""The programme pages at the size of a national programme, on PostgreSQL: `make bench`.

Generates two programmes with the same generator, each in a database of its own on the server at
BENCH_POSTGRES_URL (created and dropped here): BENCH_PROGRAMME_DATABASE (default
portal_bench_programme) at full size, and the same name with "_small" at 1/100 of it:

- 10,000 organisations (BENCH_PROGRAMME_ORGANISATIONS) with an owner and up to two more members,
  nine in ten with a credit account and an approved application's lot (three in ten a second
  one), 2 % suspended; 500 applications waiting, 300 rejected;
- 50,000 students (BENCH_PROGRAMME_STUDENTS), users with a StudentProfile in one of 60
  universities and 200 cohorts, each with a monthly allowance in each of the last three months
  (what the allowance run posts), and the unused rest of the past months' allowances expired
  (what the expiry run posts);
- 1,000,000 usage charges (BENCH_PROGRAMME_CHARGES) over those three months up to now, as the
  metering tick posts them: one usage transaction each, the holder's leg on the lot it draws
  from (the allowance of the month, the organisation's lot that expires first) and the usage
  account's leg, 10 or 20 credit-seconds (a 10 s interval of one or two GPUs), spread over
  4,000 organisations and 15,000 students with a long tail (a few use a lot);
- 1,000,000 usage samples (BENCH_PROGRAMME_SAMPLES): the last 9 hours or so of 300 running
  sandboxes at one sample per 10 s (inside the 48 h of raw samples kept), with their minute and
  hour roll-ups; 64 GPUs with device samples over the last 12 hours, hourly device roll-ups over
  the three months, and allocations (who held which GPU when); one sandbox run per holder and
  month it used GPUs in.

The small programme has 1/100 of every count but the universities, cohorts and GPUs (100
organisations, 500 students, 10,000 charges, 10,000 samples, 3 running sandboxes ...).

The rows are written with COPY, triggers off for the load (`session_replication_role`), in
the shape the ledger's writer leaves them: every transaction sums to zero, each entry carries its
transaction's kind, each holder's cached balance equals its entries and its lots' remaining, each
lot's remaining equals its entries. Then the ledger's roll-ups are built as the writers and the
refresh leave them (`credits.services.rollups_rebuild`, what `manage.py credits_rollups_rebuild`
runs: set-based SQL over the loaded entries). All of that is
checked in SQL before anything is measured, the roll-ups against the entries they sum, and the
tables are VACUUM ANALYZEd, as autovacuum would have left them.

Then, as a programme manager with MFA through the Django test client, each page is rendered once
on each programme to warm up and BENCH_PROGRAMME_REPS times (default 5) measured, alternating
between the two programmes (one connection, pointed at either database) with the baseline query
on the full one before each. It prints, per page,

  BENCH programme_<page>_queries: <n> queries (baseline <n at 1/100> queries, ratio <r>)
  BENCH programme_<page>: <median ms> ms (baseline <median ms at 1/100> ms, ratio <r>)
  BENCH programme_<page>_vs_query: <median ms> ms (baseline <median ms> ms, ratio <r>)

The second line is the target (a page's cost must not grow with the programme: r <= 2). For an
export it is its time per row instead (`_per_row`, after a `_rows` line with both row counts).
The third compares the page with one indexed query over the ledger in the same run: the count
and sum of the busiest organisation account's entries this month, through the ORM (an index
range scan of credits_entry_account_time, the (account_id, created_at) index). Then the slowest
query of each page at full size, and EXPLAIN (ANALYZE, BUFFERS) of those slower than
BENCH_PROGRAMME_EXPLAIN_MS (default 500 ms). Exit status 1 when the generated books are not
consistent.
"""

import datetime as dt
import heapq
import io
import json
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_PROGRAMME_DATABASE", "portal_bench_programme")
ORGANISATIONS = int(os.environ.get("BENCH_PROGRAMME_ORGANISATIONS", "10000"))
STUDENTS = int(os.environ.get("BENCH_PROGRAMME_STUDENTS", "50000"))
CHARGES = int(os.environ.get("BENCH_PROGRAMME_CHARGES", "1000000"))
SAMPLES = int(os.environ.get("BENCH_PROGRAMME_SAMPLES", "1000000"))
REPS = int(os.environ.get("BENCH_PROGRAMME_REPS", "5"))
EXPLAIN_MS = float(os.environ.get("BENCH_PROGRAMME_EXPLAIN_MS", "500"))
SEED = int(os.environ.get("BENCH_PROGRAMME_SEED", "7"))

MONTHS = 3  # this month and the two before it
UNIVERSITIES, COHORTS = 60, 200
ORGANISATION_SHARE = 0.35  # of the charges
DEVICES = 64
TICK_SECONDS = 10
DEVICE_SAMPLE_HOURS = 12
ALLOWANCE_SECONDS = 10 * 3600
SCALE_DOWN = 100  # the baseline programme: the same generator at 1/100 of the size


@dataclass(frozen=True)
class Size:
    """How big a generated programme is."""

    database: str
    organisations: int
    students: int
    charges: int
    samples: int
    active_organisations: int = 4_000
    active_students: int = 15_000
    running_sandboxes: int = 300
    running_on_gpus: int = 40
    waiting_applications: int = 500
    rejected_applications: int = 300

    def scaled_down(self, factor: int) -> "Size":
        """The same programme `factor` times smaller (at least one of everything)."""
        fields = {
            name: max(1, getattr(self, name) // factor)
            for name in self.__dataclass_fields__
            if name != "database"
        }
        return Size(database=f"{self.database}_small", **fields)


FULL = Size(DATABASE, ORGANISATIONS, STUDENTS, CHARGES, SAMPLES)
SMALL = FULL.scaled_down(SCALE_DOWN)

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "portal.settings.test",
        "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
        "ALLOWED_HOSTS": "testserver",
        "TEST_REDIS_URL": os.environ.get("BENCH_PROGRAMME_REDIS_URL", "redis://127.0.0.1:6379/12"),
        # One connection, pointed at either programme's database in turn (`use_database`).
        "DATABASE_POOL_MAX_SIZE": "0",
    }
)


# --- COPY helpers ---------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return r"\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        value = json.dumps(value, separators=(",", ":"))
    text = str(value)
    if "\\" in text or "\t" in text or "\n" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return text


class Copy:
    """COPY ... FROM STDIN in the text format, written in chunks."""

    CHUNK = 20_000

    def __init__(self, connection, table: str, columns: list[str]):
        self.cursor = connection.cursor()
        self.statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        self.rows: list[str] = []
        self.count = 0

    def __enter__(self):
        self._copy = self.cursor.copy(self.statement)
        self.copy = self._copy.__enter__()
        return self

    def row(self, *values) -> None:
        self.rows.append("\t".join(_cell(v) for v in values))
        if len(self.rows) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.copy.write("\n".join(self.rows) + "\n")
            self.count += len(self.rows)
            self.rows = []

    def __exit__(self, *exc):
        if exc[0] is None:
            self._flush()
        return self._copy.__exit__(*exc)


def next_id(connection, table: str) -> int:
    (value,) = connection.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()  # noqa: S608
    return value


# --- The population -------------------------------------------------------------------------

NAME_WORDS = [
    "Kisan",
    "Awaz",
    "Barani",
    "Indus",
    "Margalla",
    "Ravi",
    "Chenab",
    "Sindh",
    "Tarbela",
    "Karakoram",
    "Thar",
    "Makran",
    "Jhelum",
    "Khyber",
    "Hunza",
    "Swat",
    "Potohar",
    "Mehran",
    "Zarai",
    "Sehat",
    "Taleem",
    "Raabta",
    "Safar",
    "Bijli",
    "Pani",
    "Hisaab",
    "Dukaan",
    "Zameen",
    "Fasal",
    "Mausam",
    "Kitab",
    "Sawari",
    "Rozgar",
    "Mandi",
    "Nigrani",
    "Awaam",
    "Shifa",
    "Daftar",
    "Bazaar",
]
CITIES = ["Lahore", "Karachi", "Islamabad", "Peshawar", "Quetta", "Multan", "Faisalabad"]


def generate(conn, pm_id: int, rng: random.Random, size: "Size") -> dict:  # noqa: PLR0915 - one long load
    """Write the population through `conn` (one transaction). Returns what the measurements
    need: the busiest organisation and student, and counts."""
    from django.conf import settings
    from django.utils import timezone

    from portal.credits.models import CreditAccount
    from portal.credits.units import month_bounds
    from portal.organisations.models import DataSensitivity, Province, Sector, TeamSize

    conn.execute("SET session_replication_role = replica")  # no triggers, no FK checks: a load
    # A second connection for the tables written side by side (one COPY at a time on each).
    other_conn = conn.__class__.connect(conn.info.dsn)
    other_conn.execute("SET session_replication_role = replica")
    tz = timezone.get_default_timezone()
    now = timezone.now().astimezone(dt.UTC).replace(microsecond=0)
    this_month = timezone.localdate().replace(day=1)
    months = [this_month]
    for _ in range(MONTHS - 1):
        months.insert(0, (months[0] - dt.timedelta(days=1)).replace(day=1))
    bounds = [month_bounds(m) for m in months]
    window_start = bounds[0][0].astimezone(dt.UTC)
    system = dict(
        CreditAccount.objects.filter(kind=CreditAccount.Kind.SYSTEM).values_list(
            "system_code", "pk"
        )
    )
    usage_account, grants_account, expired_account = (
        system["usage"],
        system["grants_issued"],
        system["expired"],
    )
    language = settings.LANGUAGE_CODE
    allowance_rate = settings.STUDENT_ALLOWANCE_RATE_PKR_PER_GPU_HOUR

    def before_window(min_days: int, max_days: int) -> dt.datetime:
        return window_start - dt.timedelta(seconds=rng.randint(min_days * 86400, max_days * 86400))

    def month_of(moment: dt.datetime) -> int:
        local = moment.astimezone(tz)
        return (local.year - months[0].year) * 12 + local.month - months[0].month

    # People, organisations, memberships --------------------------------------------------
    user_id = next_id(conn, "users_user")
    org_id = next_id(conn, "organisations_organisation")
    owners, org_members, org_created = [], [], []
    with (
        Copy(
            conn,
            "users_user",
            [
                "id",
                "password",
                "is_superuser",
                "is_staff",
                "is_active",
                "date_joined",
                "email",
                "name",
                "hub_username",
                "language",
            ],
        ) as users,
        Copy(
            other_conn,
            "organisations_organisation",
            [
                "id",
                "created_at",
                "updated_at",
                "public_id",
                "legal_name",
                "slug",
                "secp_registration_number",
                "sector",
                "city",
                "province",
                "website",
                "team_size",
                "data_sensitivity",
                "is_active",
                "created_by_id",
            ],
        ) as organisations,
    ):
        sectors, provinces = list(Sector.values), list(Province.values)
        sizes, sensitivities = list(TeamSize.values), list(DataSensitivity.values)
        for k in range(size.organisations):
            joined = before_window(31, 400)
            people = []
            for j in range(1 + k % 3):
                uid = user_id
                user_id += 1
                users.row(
                    uid,
                    "!",
                    False,
                    False,
                    True,
                    joined + dt.timedelta(days=j),
                    f"founder{k}-{j}@startup{k}.pk",
                    f"Founder {k}-{j}",
                    f"o{k:05d}-{j}",
                    language,
                )
                people.append(uid)
            oid = org_id + k
            created = joined + dt.timedelta(hours=1)
            org_created.append(created)
            organisations.row(
                oid,
                created,
                created,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                f"{rng.choice(NAME_WORDS)} {rng.choice(NAME_WORDS)} {k} (Private) Limited",
                f"startup-{k}",
                f"{2_000_000 + k:07d}",
                rng.choice(sectors),
                rng.choice(CITIES),
                rng.choice(provinces),
                "",
                rng.choice(sizes),
                rng.choice(sensitivities),
                rng.random() >= 0.02,
                people[0],
            )
            owners.append(people[0])
            org_members.append(people)
        student_first_user = user_id
        for i in range(size.students):
            users.row(
                user_id + i,
                "!",
                False,
                False,
                True,
                before_window(31, 400),
                f"student{i}@uni{i % UNIVERSITIES}.edu.pk",
                f"Student {i}",
                f"s{i:05d}",
                language,
            )
        user_id += size.students
    students = list(range(student_first_user, student_first_user + size.students))
    with Copy(
        conn,
        "organisations_membership",
        ["created_at", "updated_at", "role", "user_id", "organisation_id"],
    ) as memberships:
        for k, people in enumerate(org_members):
            for j, uid in enumerate(people):
                role = "owner" if j == 0 else ("admin" if j == 1 else "member")
                memberships.row(org_created[k], org_created[k], role, uid, org_id + k)

    # Universities, cohorts, student profiles ------------------------------------------------
    university_id = next_id(conn, "onboarding_university")
    cohort_id = next_id(conn, "onboarding_cohort")
    long_ago = window_start - dt.timedelta(days=400)
    with Copy(
        conn,
        "onboarding_university",
        ["id", "created_at", "updated_at", "name", "short_name", "city", "is_active"],
    ) as universities:
        for u in range(UNIVERSITIES):
            universities.row(
                university_id + u,
                long_ago,
                long_ago,
                f"University of {NAME_WORDS[u % len(NAME_WORDS)]} {u}",
                f"U{u}",
                CITIES[u % len(CITIES)],
                True,
            )
    with Copy(
        conn,
        "onboarding_cohort",
        [
            "id",
            "created_at",
            "updated_at",
            "public_id",
            "name",
            "code",
            "capacity",
            "expires_at",
            "created_by_id",
            "university_id",
        ],
    ) as cohorts:
        for c in range(COHORTS):
            cohorts.row(
                cohort_id + c,
                long_ago,
                long_ago,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                f"Cohort {c:03d}",
                f"BENCH{c:04d}",
                1000,
                now + dt.timedelta(days=365),
                pm_id,
                university_id + c % UNIVERSITIES if c % 4 else None,
            )
    with Copy(
        conn,
        "onboarding_studentprofile",
        [
            "created_at",
            "updated_at",
            "route",
            "institution",
            "programme",
            "expected_graduation_year",
            "cohort_id",
            "user_id",
            "university_id",
        ],
    ) as profiles:
        for i, uid in enumerate(students):
            created = before_window(31, 400)
            if i % 5 < 3:
                profiles.row(
                    created,
                    created,
                    "cohort",
                    "",
                    "BS Computer Science",
                    this_month.year + 1 + i % 3,
                    cohort_id + i % COHORTS,
                    uid,
                    None,
                )
            else:
                profiles.row(
                    created,
                    created,
                    "email_domain",
                    "",
                    "BS Data Science",
                    this_month.year + 1 + i % 3,
                    None,
                    uid,
                    university_id + i % UNIVERSITIES,
                )

    # Accounts, applications and lots (the ledger's rows are written below) -----------------
    account_id = next_id(conn, "credits_creditaccount")
    org_account = {}  # organisation index -> account id
    for k in range(size.organisations):
        if k % 10 != 9:  # one in ten has never had credits: no account yet
            org_account[k] = account_id
            account_id += 1
    student_account = {}
    for i in range(size.students):
        student_account[i] = account_id
        account_id += 1

    # Who uses GPUs, and how much (a long tail): Zipf-like weights over shuffled holders.
    active_orgs = rng.sample(sorted(org_account), min(size.active_organisations, len(org_account)))
    active_students = rng.sample(range(size.students), min(size.active_students, size.students))
    holders = [("o", k) for k in active_orgs] + [("s", i) for i in active_students]
    org_weights = [1 / (r + 1) ** 0.8 for r in range(len(active_orgs))]
    student_weights = [1 / (r + 1) ** 0.5 for r in range(len(active_students))]
    scale_o = ORGANISATION_SHARE / sum(org_weights)
    scale_s = (1 - ORGANISATION_SHARE) / sum(student_weights)
    weights = [w * scale_o for w in org_weights] + [w * scale_s for w in student_weights]
    start_s = window_start.timestamp()
    span = (now - dt.timedelta(minutes=1)).timestamp() - start_s
    times = sorted(start_s + rng.random() * span for _ in range(size.charges))
    chosen = rng.choices(range(len(holders)), weights=weights, k=size.charges)
    amounts = [20 if rng.random() < 0.15 else 10 for _ in range(size.charges)]
    # An organisation's first lot covers what it will use (applications are sized to need).
    need = {}
    for index, amount in zip(chosen, amounts, strict=True):
        kind, k = holders[index]
        if kind == "o":
            need[k] = need.get(k, 0) + amount

    grant_id = next_id(conn, "credits_creditgrant")
    application_id = next_id(conn, "credits_creditapplication")
    grants = []  # [id, account, amount, remaining, rate, created, expires, source, app, key]
    lots_of_org: dict[int, list[int]] = {}
    applications = []  # (id, organisation index, state, submitted, decided, hours)
    for k in sorted(org_account):
        first = before_window(1, 30)
        hours = max(
            rng.choice((50, 100, 250, 500, 1000, 2000)), -(-need.get(k, 0) * 6 // 5) // 3600
        )
        plan = [(first, hours)]
        if rng.random() < 0.3:
            plan.append((window_start + dt.timedelta(seconds=rng.random() * span), 100))
        for created, lot_hours in plan:
            applications.append(
                (
                    application_id,
                    k,
                    "approved" if rng.random() < 0.7 else "partially_approved",
                    created - dt.timedelta(days=rng.randint(1, 20), hours=rng.randint(0, 23)),
                    created,
                    lot_hours,
                )
            )
            grants.append(
                [
                    grant_id,
                    org_account[k],
                    lot_hours * 3600,
                    lot_hours * 3600,
                    Decimal(rng.choice(("500.00", "640.00", "750.00", "900.00"))),
                    created,
                    created + dt.timedelta(days=365),
                    "application",
                    application_id,
                    f"bench-grant:{grant_id}",
                ]
            )
            lots_of_org.setdefault(k, []).append(len(grants) - 1)
            grant_id += 1
            application_id += 1
    allowance_of: dict[tuple[int, int], int] = {}  # (student index, month index) -> grants index
    for m, (start, following) in enumerate(bounds):
        for i in range(size.students):
            created = start.astimezone(dt.UTC) + dt.timedelta(seconds=rng.randint(60, 6 * 3600))
            if created >= now:
                continue
            grants.append(
                [
                    grant_id,
                    student_account[i],
                    ALLOWANCE_SECONDS,
                    ALLOWANCE_SECONDS,
                    allowance_rate,
                    created,
                    following.astimezone(dt.UTC),
                    "allowance",
                    None,
                    f"student-allowance:{students[i]}:{months[m]:%Y-%m}",
                ]
            )
            allowance_of[(i, m)] = len(grants) - 1
            grant_id += 1

    # The ledger, in time order: lots credited, usage drawn, unused allowances expired --------
    tx_columns = ["id", "public_id", "idempotency_key", "kind", "description", "metadata"]
    tx_columns += ["created_at"]
    entry_columns = [
        "id",
        "amount",
        "created_at",
        "account_id",
        "grant_id",
        "transaction_id",
        "kind",
    ]
    transaction_id = next_id(conn, "credits_ledgertransaction")
    entry_id = next_id(conn, "credits_ledgerentry")
    credit_events = sorted(
        ((grants[g][5].timestamp(), 0, g) for g in range(len(grants))), key=lambda e: e[:2]
    )
    usage_events = ((times[n], 1, n) for n in range(size.charges))
    expiry_events = sorted(
        (grants[g][6].timestamp() + 60 + g % 3600, 2, g)
        for (i, m), g in allowance_of.items()
        if grants[g][6] <= now - dt.timedelta(hours=1)
    )
    server_name = {}  # holder index -> its sandbox's server name (usage metadata)
    used_months: dict[tuple[int, int], list[float]] = {}  # (holder, month) -> [first, last]
    dropped = expired_lots = 0
    used_by_account: dict[int, int] = {}
    usage_this_month: dict[int, int] = {}
    this_month_start = bounds[-1][0].timestamp()
    with (
        Copy(conn, "credits_ledgertransaction", tx_columns) as txs,
        Copy(other_conn, "credits_ledgerentry", entry_columns) as entries,
    ):

        def post(kind: str, key: str, at: float, metadata: dict, legs) -> None:
            nonlocal transaction_id, entry_id
            created = dt.datetime.fromtimestamp(at, dt.UTC)
            txs.row(
                transaction_id,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                key,
                kind,
                "",
                metadata,
                created,
            )
            for account, grant, amount in legs:
                entries.row(entry_id, amount, created, account, grant, transaction_id, kind)
                entry_id += 1
            transaction_id += 1

        for at, what, n in heapq.merge(credit_events, usage_events, expiry_events):
            if what == 0:  # a lot: an approved application's grant, or an allowance
                grant = grants[n]
                kind = "grant" if grant[7] == "application" else "allowance"
                post(
                    kind,
                    grant[9],
                    at,
                    {"grant": str(grant[0])},
                    [(grants_account, None, -grant[2]), (grant[1], grant[0], grant[2])],
                )
            elif what == 1:  # a metering interval charged
                holder = holders[chosen[n]]
                amount = amounts[n]
                moment = dt.datetime.fromtimestamp(at, dt.UTC)
                if holder[0] == "o":
                    lots = [g for g in lots_of_org[holder[1]] if grants[g][5] <= moment]
                else:
                    lots = [allowance_of.get((holder[1], month_of(moment)))]
                lot = next(
                    (
                        g
                        for g in lots
                        if g is not None and grants[g][3] >= amount and moment >= grants[g][5]
                    ),
                    None,
                )
                if lot is None:  # the account could not pay: the tick would stop the sandbox
                    dropped += 1
                    continue
                grants[lot][3] -= amount
                account = grants[lot][1]
                used_by_account[account] = used_by_account.get(account, 0) + amount
                if at >= this_month_start:
                    usage_this_month[account] = usage_this_month.get(account, 0) + amount
                name = server_name.setdefault(chosen[n], f"sb-{len(server_name):010d}")
                first_last = used_months.setdefault((chosen[n], month_of(moment)), [at, at])
                first_last[1] = at
                post(
                    "usage",
                    f"bench-usage:{n}",
                    at,
                    {"sandbox": name, "profile": "gpu-2" if amount == 20 else "gpu-1"},
                    [(account, grants[lot][0], -amount), (usage_account, None, amount)],
                )
            else:  # an allowance past its date: the unused rest goes to the expired account
                grant = grants[n]
                grant.append(dt.datetime.fromtimestamp(at, dt.UTC))  # expired_at
                if grant[3]:
                    expired_lots += 1
                    post(
                        "expiry",
                        f"grant-expiry:{grant[0]}",
                        at,
                        {"grant": str(grant[0])},
                        [(grant[1], grant[0], -grant[3]), (expired_account, None, grant[3])],
                    )
                    grant[3] = 0
    ledger_counts = {"transactions": txs.count, "entries": entries.count}

    # Lots and accounts, as the ledger left them ----------------------------------------------
    balance: dict[int, int] = {}
    for grant in grants:
        balance[grant[1]] = balance.get(grant[1], 0) + grant[3]
    with Copy(
        conn,
        "credits_creditaccount",
        [
            "id",
            "created_at",
            "updated_at",
            "public_id",
            "kind",
            "balance",
            "organisation_id",
            "user_id",
        ],
    ) as accounts:
        for k, account in org_account.items():
            accounts.row(
                account,
                org_created[k],
                org_created[k],
                uuid.UUID(int=rng.getrandbits(128), version=4),
                "organisation",
                balance.get(account, 0),
                org_id + k,
                None,
            )
        for i, account in student_account.items():
            created = window_start - dt.timedelta(days=1)
            accounts.row(
                account,
                created,
                created,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                "student",
                balance.get(account, 0),
                None,
                students[i],
            )
    with Copy(
        conn,
        "credits_creditgrant",
        [
            "id",
            "created_at",
            "updated_at",
            "public_id",
            "source",
            "amount",
            "remaining",
            "rate_pkr_per_gpu_hour",
            "expires_at",
            "note",
            "expired_at",
            "account_id",
            "application_id",
        ],
    ) as lots:
        for grant in grants:
            lots.row(
                grant[0],
                grant[5],
                grant[5],
                uuid.UUID(int=rng.getrandbits(128), version=4),
                grant[7],
                grant[2],
                grant[3],
                grant[4],
                grant[6],
                "",
                grant[10] if len(grant) > 10 else None,
                grant[1],
                grant[8],
            )

    # Applications: the approved ones behind the lots, some rejected, some waiting ------------
    sectors = list(Sector.values)
    for _ in range(size.rejected_applications):
        k = rng.randrange(size.organisations)
        decided = window_start + dt.timedelta(seconds=rng.random() * span)
        applications.append(
            (
                application_id,
                k,
                "rejected",
                decided - dt.timedelta(days=rng.randint(1, 15)),
                decided,
                100,
            )
        )
        application_id += 1
    for n in range(size.waiting_applications):
        k = rng.randrange(size.organisations)
        submitted = now - dt.timedelta(seconds=rng.randint(3600, 30 * 86400))
        state = "in_review" if n % 5 == 0 else "submitted"
        applications.append((application_id, k, state, submitted, None, 200))
        application_id += 1
    with (
        Copy(
            conn,
            "credits_creditapplication",
            [
                "id",
                "created_at",
                "updated_at",
                "public_id",
                "title",
                "summary",
                "sector",
                "requested_gpu_hours",
                "gpu_class",
                "duration_months",
                "data_sensitivity",
                "state",
                "state_changed_at",
                "submitted_at",
                "decided_at",
                "created_by_id",
                "decided_by_id",
                "organisation_id",
            ],
        ) as rows,
        Copy(
            other_conn,
            "credits_applicationevent",
            ["from_state", "to_state", "message", "created_at", "author_id", "application_id"],
        ) as events,
    ):
        for app, k, state, submitted, decided, hours in applications:
            created = submitted - dt.timedelta(hours=2)
            rows.row(
                app,
                created,
                decided or submitted,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                f"Project {app}",
                "Train a model for the programme's benchmark.",
                rng.choice(sectors),
                hours if state != "partially_approved" else hours * 2,
                "any",
                3,
                "public",
                state,
                decided or submitted,
                submitted,
                decided,
                owners[k],
                pm_id if decided else None,
                org_id + k,
            )
            events.row("draft", "submitted", "", submitted, owners[k], app)
            if decided or state == "in_review":
                review = submitted + dt.timedelta(hours=rng.randint(1, 48))
                events.row("submitted", "in_review", "", review, pm_id, app)
            if decided:
                events.row("in_review", state, "", decided, pm_id, app)

    # Sandboxes, their runs, GPUs held; samples and roll-ups -----------------------------------
    from sandboxes.launcher.models import ResourceProfile, SandboxImage

    profiles = dict(ResourceProfile.objects.values_list("slug", "pk"))
    images = dict(SandboxImage.objects.values_list("slug", "pk"))
    rates = dict(ResourceProfile.objects.values_list("slug", "charge_millicredits_per_second"))
    sandbox_id = next_id(conn, "launcher_sandbox")
    sandbox_of = {}  # holder index -> sandbox id
    running = []  # sandbox ids that are running now
    holder_order = sorted(server_name, key=lambda h: server_name[h])
    with Copy(
        conn,
        "launcher_sandbox",
        [
            "id",
            "created_at",
            "updated_at",
            "public_id",
            "server_name",
            "name",
            "status",
            "status_message",
            "status_code",
            "status_params",
            "progress",
            "running_at",
            "stopped_at",
            "account_id",
            "organisation_id",
            "profile_id",
            "user_id",
            "image_id",
        ],
    ) as sandboxes:
        for position, h in enumerate(holder_order):
            kind, k = holders[h]
            sid = sandbox_id + position
            sandbox_of[h] = sid
            is_running = position < size.running_sandboxes
            if is_running:
                running.append(sid)
            gpu = not is_running or position < size.running_on_gpus
            account = org_account[k] if kind == "o" else student_account[k]
            created = window_start - dt.timedelta(days=1)
            sandboxes.row(
                sid,
                created,
                now,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                server_name[h],
                "",
                "running" if is_running else "stopped",
                "",
                "",
                {},
                100,
                now - dt.timedelta(hours=10) if is_running else created,
                None if is_running else now - dt.timedelta(hours=1),
                account,
                org_id + k if kind == "o" else None,
                profiles["gpu-1" if gpu else "cpu-small"],
                owners[k] if kind == "o" else students[k],
                images["pytorch-gpu" if gpu else "python-cpu"],
            )
    with Copy(
        conn,
        "metering_sandboxrun",
        [
            "created_at",
            "updated_at",
            "public_id",
            "rate_millicredits",
            "interval_seconds",
            "started_at",
            "ended_at",
            "charged_until",
            "settled",
            "charged_credit_seconds",
            "unpaid_credit_seconds",
            "account_id",
            "sandbox_id",
        ],
    ) as runs:
        for (h, m), (first, last) in used_months.items():
            kind, k = holders[h]
            started = dt.datetime.fromtimestamp(first, dt.UTC)
            ended = dt.datetime.fromtimestamp(last + TICK_SECONDS, dt.UTC)
            is_open = m == MONTHS - 1 and sandbox_of[h] in running
            runs.row(
                started,
                ended,
                uuid.UUID(int=rng.getrandbits(128), version=4),
                rates["gpu-1"],
                TICK_SECONDS,
                started,
                None if is_open else ended,
                ended,
                not is_open,
                0,
                0,
                org_account[k] if kind == "o" else student_account[k],
                sandbox_of[h],
            )

    from sandboxes.gpus.models import GpuDevice

    devices = list(GpuDevice.objects.order_by("index").values_list("pk", flat=True))
    gpu_sandboxes = [sandbox_of[h] for h in holder_order[size.running_sandboxes :]] or running
    with Copy(
        conn,
        "gpus_gpuallocation",
        ["created_at", "updated_at", "released_at", "sandbox_id", "device_id"],
    ) as allocations:
        for d, device in enumerate(devices):
            moment = window_start
            while True:
                length = dt.timedelta(minutes=rng.randint(30, 8 * 60))
                end = moment + length
                last = end >= now
                if last and d < size.running_on_gpus:
                    allocations.row(moment, moment, None, running[d], device)
                    break
                if last:
                    break
                allocations.row(moment, end, end, rng.choice(gpu_sandboxes), device)
                moment = end + dt.timedelta(minutes=rng.randint(0, 90))
    hour0 = window_start.replace(minute=0, second=0)
    with Copy(
        conn,
        "metering_devicerollup",
        ["bucket", "samples", "util_pct", "held_samples", "idle_held_samples", "device_id"],
    ) as rollups:
        bucket = hour0
        while bucket < now:
            for device in devices:
                held = rng.choice((0, 360, 360, 360, 180))
                idle = held if rng.random() < 0.1 else 0
                util = None if rng.random() < 0.01 else round(rng.random() * 100, 1)
                rollups.row(bucket, 360, util, held, idle, device)
            bucket += dt.timedelta(hours=1)
    ticks = dt.timedelta(seconds=TICK_SECONDS)
    first_device_tick = now - dt.timedelta(hours=DEVICE_SAMPLE_HOURS)
    with Copy(
        conn,
        "metering_devicesample",
        ["taken_at", "util_pct", "memory_used_mib", "power_w", "temperature_c", "device_id"],
    ) as samples:
        moment = first_device_tick
        while moment <= now:
            for device in devices:
                samples.row(moment, round(rng.random() * 100, 1), 40_000, 350.0, 60, device)
            moment += ticks
    per_sandbox = -(-size.samples // len(running))
    written = 0
    with (
        Copy(
            conn,
            "metering_usagesample",
            [
                "taken_at",
                "gpu_count",
                "gpu_util_pct",
                "gpu_memory_used_mib",
                "gpu_power_w",
                "gpu_temperature_c",
                "cpu_pct",
                "memory_used_mib",
                "sandbox_id",
            ],
        ) as samples,
        Copy(
            other_conn,
            "metering_usagerollup",
            ["step", "bucket", "samples", "gpu_util_pct", "cpu_pct", "sandbox_id"],
        ) as usage_rollups,
    ):
        for position, sid in enumerate(running):
            count = min(per_sandbox, size.samples - written)
            gpu = position < size.running_on_gpus
            moment = now - ticks * (count - 1)
            minutes: dict[dt.datetime, int] = {}
            hours: dict[dt.datetime, int] = {}
            for _ in range(count):
                samples.row(
                    moment,
                    1 if gpu else 0,
                    50.0 if gpu else None,
                    30_000 if gpu else None,
                    300.0 if gpu else None,
                    55 if gpu else None,
                    80.0,
                    4096,
                    sid,
                )
                minute = moment.replace(second=0)
                minutes[minute] = minutes.get(minute, 0) + 1
                hour = minute.replace(minute=0)
                hours[hour] = hours.get(hour, 0) + 1
                moment += ticks
            written += count
            for step, buckets in (("minute", minutes), ("hour", hours)):
                for bucket, n in buckets.items():
                    usage_rollups.row(step, bucket, n, 50.0 if gpu else None, 80.0, sid)
            if written >= size.samples:
                break
    for connection in (conn, other_conn):
        connection.execute("SET session_replication_role = DEFAULT")
        connection.commit()
    other_conn.close()

    busiest_org = max(
        (k for k in org_account), key=lambda k: usage_this_month.get(org_account[k], 0)
    )
    busiest_student = max(
        range(size.students), key=lambda i: usage_this_month.get(student_account[i], 0)
    )
    return {
        "charges": size.charges - dropped,
        "dropped": dropped,
        "expired_lots": expired_lots,
        "ledger": ledger_counts,
        "samples": written,
        "busiest_org_account": org_account[busiest_org],
        "busiest_org_slug": f"startup-{busiest_org}",
        "busiest_student": f"s{busiest_student:05d}",
        "months": months,
    }


SEQUENCED = [
    "users_user",
    "organisations_organisation",
    "organisations_membership",
    "onboarding_university",
    "onboarding_cohort",
    "onboarding_studentprofile",
    "credits_creditaccount",
    "credits_creditgrant",
    "credits_creditapplication",
    "credits_applicationevent",
    "credits_ledgertransaction",
    "credits_ledgerentry",
    "launcher_sandbox",
    "metering_sandboxrun",
    "gpus_gpuallocation",
    "metering_devicerollup",
    "metering_devicesample",
    "metering_usagesample",
    "metering_usagerollup",
]


def after_load(conn) -> None:
    """Sequences past the rows written; statistics and visibility maps as autovacuum keeps
    them on a live system."""
    for table in SEQUENCED:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
            f"(SELECT coalesce(max(id), 1) FROM {table}))"
        )
    conn.commit()
    conn.autocommit = True
    for table in SEQUENCED:
        conn.execute(f"VACUUM ANALYZE {table}")
    conn.autocommit = False


BOOKS_CHECKS = {
    "unbalanced transactions": """
        SELECT count(*) FROM (
            SELECT transaction_id FROM credits_ledgerentry
            GROUP BY transaction_id HAVING sum(amount) <> 0
        ) AS unbalanced""",
    "holder balances unlike their entries": """
        SELECT count(*) FROM credits_creditaccount a
        LEFT JOIN (SELECT account_id, sum(amount) AS total FROM credits_ledgerentry
                   GROUP BY account_id) e ON e.account_id = a.id
        WHERE a.kind <> 'system' AND a.balance <> coalesce(e.total, 0)""",
    "holder balances unlike their lots": """
        SELECT count(*) FROM credits_creditaccount a
        LEFT JOIN (SELECT account_id, sum(remaining) AS total FROM credits_creditgrant
                   GROUP BY account_id) g ON g.account_id = a.id
        WHERE a.kind <> 'system' AND a.balance <> coalesce(g.total, 0)""",
    "lots unlike their entries": """
        SELECT count(*) FROM credits_creditgrant g
        LEFT JOIN (SELECT grant_id, sum(amount) AS total FROM credits_ledgerentry
                   WHERE grant_id IS NOT NULL GROUP BY grant_id) e ON e.grant_id = g.id
        WHERE g.remaining <> coalesce(e.total, 0)""",
    "holder entries without a lot": """
        SELECT count(*) FROM credits_ledgerentry e
        JOIN credits_creditaccount a ON a.id = e.account_id
        WHERE a.kind <> 'system' AND e.grant_id IS NULL""",
}


# The roll-ups the pages read, against the entries they sum (and the programme's against the
# accounts'): every (account, local day or month, kind, rate) the one and the other have, with
# the amounts and counts of both, must agree. %(tz)s is settings.TIME_ZONE.
_ENTRY_SUMS = """
    SELECT e.account_id, (date_trunc('{unit}', e.created_at AT TIME ZONE %(tz)s))::date AS starts,
           e.kind, g.rate_pkr_per_gpu_hour AS rate, sum(e.amount) AS amount, count(*) AS n
    FROM credits_ledgerentry e
    JOIN credits_creditaccount a ON a.id = e.account_id AND a.kind <> 'system'
    JOIN credits_creditgrant g ON g.id = e.grant_id
    GROUP BY 1, 2, 3, 4"""
_ROLLUPS_UNLIKE_ENTRIES = """
    SELECT count(*) FROM ({entries}) x
    FULL JOIN (SELECT * FROM credits_accountrollup WHERE period = '{unit}') r
      ON r.account_id = x.account_id AND r.starts = x.starts AND r.kind = x.kind
     AND r.rate_pkr_per_gpu_hour = x.rate
    WHERE x.amount IS DISTINCT FROM r.amount OR x.n IS DISTINCT FROM r.entries"""
_PROGRAMME_UNLIKE_ACCOUNTS = """
    SELECT count(*) FROM (
        SELECT r.starts, a.kind AS holder_kind, r.kind, r.rate_pkr_per_gpu_hour AS rate,
               sum(r.amount) AS amount, sum(r.entries) AS n
        FROM credits_accountrollup r JOIN credits_creditaccount a ON a.id = r.account_id
        WHERE r.period = '{unit}' GROUP BY 1, 2, 3, 4
    ) x FULL JOIN (
        SELECT * FROM credits_programmerollup WHERE period = '{unit}' AND dimension = 'programme'
    ) p ON p.starts = x.starts AND p.holder_kind = x.holder_kind AND p.kind = x.kind
       AND p.rate_pkr_per_gpu_hour = x.rate
    WHERE x.amount IS DISTINCT FROM p.amount OR x.n IS DISTINCT FROM p.entries"""
for _unit in ("day", "month"):
    BOOKS_CHECKS[f"account {_unit} roll-ups unlike their entries"] = _ROLLUPS_UNLIKE_ENTRIES.format(
        entries=_ENTRY_SUMS.format(unit=_unit), unit=_unit
    )
    BOOKS_CHECKS[f"programme {_unit} roll-ups unlike the accounts'"] = (
        _PROGRAMME_UNLIKE_ACCOUNTS.format(unit=_unit)
    )


def books_check(conn) -> list[str]:
    from django.conf import settings

    problems = []
    for name, sql in BOOKS_CHECKS.items():
        (count,) = conn.execute(sql, {"tz": settings.TIME_ZONE}).fetchone()
        if count:
            problems.append(f"{count} {name}")
    conn.rollback()
    return problems


# --- Measurements ---------------------------------------------------------------------------


def pages(info: dict) -> list[tuple[str, str]]:
    from django.urls import reverse

    from portal.dashboard.selectors.reports import Dimension
    from portal.organisations.models import Organisation

    months = info["months"]
    this_month = months[-1]
    first = this_month
    for _ in range(11):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    year = f"month_from={first:%Y-%m}&month_to={this_month:%Y-%m}"
    organisation = Organisation.objects.get(slug=info["busiest_org_slug"])
    listed = [
        ("overview", reverse("dashboard:overview")),
        ("organisations", reverse("dashboard:organisations")),
        ("organisations_by_usage", reverse("dashboard:organisations") + "?ordering=-used"),
        ("organisation", reverse("dashboard:organisation", args=[organisation.public_id])),
        ("students", reverse("dashboard:students")),
        ("students_by_usage", reverse("dashboard:students") + "?ordering=-used"),
        ("student", reverse("dashboard:student", args=[info["busiest_student"]])),
    ]
    for dimension in Dimension.values:
        listed.append(
            (
                f"reports_{dimension}",
                reverse("dashboard:reports") + f"?dimension={dimension}&{year}",
            )
        )
    for extension in ("csv", "xlsx"):
        listed.append(
            (
                f"reports_export_{extension}",
                reverse("dashboard:reports_export", args=[extension])
                + f"?dimension=organisation&{year}",
            )
        )
    listed += [
        ("report_monthly", reverse("dashboard:report_monthly", args=[f"{this_month:%Y-%m}"])),
        ("cluster", reverse("dashboard:cluster")),
    ]
    return listed


def baseline_query(account_id: int, start: dt.datetime, end: dt.datetime):
    """One indexed query over the ledger: the account's entries this month, counted and summed
    (an index range scan of credits_entry_account_time)."""
    from django.db.models import Count, Sum

    from portal.credits.models import LedgerEntry

    def run() -> dict:
        return LedgerEntry.objects.filter(
            account_id=account_id, created_at__gte=start, created_at__lt=end
        ).aggregate(n=Count("pk"), total=Sum("amount"))

    return run


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def fetch(client, url: str) -> bytes:
    """GET the page, and read all of it (an export is streamed)."""
    response = client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"BENCH {url}: status {response.status_code}")
    return b"".join(response.streaming_content) if response.streaming else response.content


def rows_in(url: str, content: bytes) -> int:
    """The rows of an export (its lines but the header); 0 for a page."""
    path = url.split("?")[0]
    if path.endswith("csv"):
        return content.count(b"\n") - 1
    if path.endswith("xlsx"):
        from openpyxl import load_workbook

        sheet = load_workbook(io.BytesIO(content), read_only=True).active
        return sum(1 for _row in sheet.iter_rows()) - 1
    return 0


def explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return [row[0] for row in cursor.fetchall()]


def use_database(name: str) -> None:
    """Point Django's connection at one of the two programmes' databases."""
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name


@dataclass
class Programme:
    """One generated programme, as the measurements need it."""

    size: Size
    info: dict
    client: object = None
    urls: dict | None = None
    baseline: object = None


def ratio_line(name: str, value: float, baseline: float, unit: str = "ms", digits: int = 1) -> str:
    return (
        f"BENCH {name}: {value:.{digits}f} {unit} "
        f"(baseline {baseline:.{digits}f} {unit}, ratio {value / baseline:.2f})"
    )


def measure(programmes: list[Programme], pm_email: str) -> list[tuple[str, float, dict]]:
    """Each page on the full programme and on the small one, alternately, REPS times after a
    warm-up, with the baseline query on the full one: medians and their ratios."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from portal.credits.units import month_bounds
    from portal.users.models import User
    from tests.conftest import record_sign_in

    for programme in programmes:
        use_database(programme.size.database)
        pm = User.objects.get(email=pm_email)
        programme.client = Client()
        programme.client.force_login(pm)
        record_sign_in(programme.client.session, pm, second_factor=True)  # as after the code
        programme.urls = dict(pages(programme.info))
        start, end = month_bounds(programme.info["months"][-1])
        programme.baseline = baseline_query(programme.info["busiest_org_account"], start, end)
    full, small = programmes
    use_database(full.size.database)
    with CaptureQueriesContext(connection) as captured:
        full.baseline()
    baseline_plan = explain(captured.captured_queries[0]["sql"])
    say("BENCH baseline plan: " + " | ".join(line.strip() for line in baseline_plan[:3]))
    results = []
    for name in full.urls:
        times: dict[str, list[float]] = {"full": [], "small": [], "query": []}
        rows, queries = {}, {}
        for programme, label in ((full, "full"), (small, "small")):
            use_database(programme.size.database)
            url = programme.urls[name]
            rows[label] = rows_in(url, fetch(programme.client, url))  # and warm
        for _ in range(REPS):
            for programme, label in ((full, "full"), (small, "small")):
                use_database(programme.size.database)
                programme.baseline()  # the connection is open and warm before the clock runs
                if label == "full":
                    times["query"].append(timed(programme.baseline))
                url = programme.urls[name]
                times[label].append(timed(lambda p=programme, u=url: fetch(p.client, u)))
        for programme, label in ((full, "full"), (small, "small")):
            use_database(programme.size.database)
            with CaptureQueriesContext(connection) as captured:
                fetch(programme.client, programme.urls[name])
            queries[label] = captured.captured_queries
        full_ms, small_ms, query_ms = (statistics.median(times[k]) for k in times)
        say(
            f"BENCH programme_{name}_queries: {len(queries['full'])} queries (baseline "
            f"{len(queries['small'])} queries at 1/{SCALE_DOWN}, ratio "
            f"{len(queries['full']) / len(queries['small']):.2f})"
        )
        if rows["full"]:  # an export: its time per row
            say(
                f"BENCH programme_{name}_rows: {rows['full']} rows (baseline {rows['small']} "
                f"rows, ratio {rows['full'] / rows['small']:.1f})"
            )
            say(
                ratio_line(
                    f"programme_{name}_per_row",
                    full_ms / rows["full"],
                    small_ms / rows["small"],
                    digits=4,
                )
            )
        else:
            say(ratio_line(f"programme_{name}", full_ms, small_ms))
        say(ratio_line(f"programme_{name}_vs_query", full_ms, query_ms))
        use_database(full.size.database)
        slowest = max(queries["full"], key=lambda q: float(q["time"]))
        results.append((name, full_ms, slowest))
    return results


def profile(results) -> None:
    say("BENCH profile: the slowest query of each page (full size)")
    for name, page_ms, slowest in results:
        seconds = float(slowest["time"])
        sql = " ".join(slowest["sql"].split())
        say(f"  {name}: {seconds * 1000:.0f} ms of {page_ms:.0f} ms: {sql[:160]}...")
    for name, _page_ms, slowest in results:
        if float(slowest["time"]) * 1000 < EXPLAIN_MS:
            continue
        sql = " ".join(slowest["sql"].split())
        say(f"BENCH explain programme_{name} (its slowest query): {sql[:300]}...")
        for line in explain(slowest["sql"]):
            say("    " + line)


# --- Main -----------------------------------------------------------------------------------

PM_EMAIL = "manager@programme.gov.pk"


def build(size: Size) -> dict | None:
    """Create, fill and check one programme's database; its info, or None when its books do
    not hold."""
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    from portal.credits.services import rollups_rebuild
    from portal.users.services import programme_manager_grant
    from sandboxes.gpus.backends import SimulatedBackend
    from sandboxes.gpus.services import inventory_sync
    from tests.conftest import totp_activate
    from tests.factories import UserFactory

    common.database_create(SERVER_URL, size.database)
    use_database(size.database)
    call_command("migrate", verbosity=0, interactive=False)
    pm = UserFactory(email=PM_EMAIL)
    programme_manager_grant(user=pm, acting_user=None)
    totp_activate(pm)
    inventory_sync(backend=SimulatedBackend(f"{DEVICES}xH100-80GB", host="bench-host"))
    connections.close_all()

    started = time.perf_counter()
    with psycopg.connect(f"{SERVER_URL}/{size.database}") as conn:
        info = generate(conn, pm.pk, random.Random(SEED), size)
        generated = time.perf_counter() - started
        after_load(conn)
    # The roll-ups, as the ledger's writers leave them: the rebuild sums the loaded entries.
    use_database(size.database)
    rolled = time.perf_counter()
    rollups_rebuild()
    rolled = time.perf_counter() - rolled
    connections.close_all()
    with psycopg.connect(f"{SERVER_URL}/{size.database}", autocommit=True) as conn:
        for table in ROLLUP_TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
    with psycopg.connect(f"{SERVER_URL}/{size.database}") as conn:
        problems = books_check(conn)
    say(
        f"BENCH data ({size.database}): {info['charges']:,} usage charges ({info['dropped']:,} "
        f"refused: the account could not pay), {info['ledger']['transactions']:,} ledger "
        f"transactions, {info['ledger']['entries']:,} entries, {info['expired_lots']:,} "
        f"allowances expired, {info['samples']:,} usage samples; generated in {generated:.0f} s, "
        f"roll-ups rebuilt in {rolled:.0f} s, ready in {time.perf_counter() - started:.0f} s"
    )
    if problems:
        say("BENCH books: FAIL: " + "; ".join(problems))
        return None
    say(
        "BENCH books: OK (every transaction sums to zero; balances equal entries and lots; "
        "roll-ups equal entries)"
    )
    return info


ROLLUP_TABLES = ["credits_accountrollup", "credits_programmerollup"]


def main() -> int:
    say(
        f"BENCH setup: databases {FULL.database} and {SMALL.database}; {FULL.organisations:,} "
        f"organisations, {FULL.students:,} students, {FULL.charges:,} usage charges, "
        f"{FULL.samples:,} usage samples, and 1/{SCALE_DOWN} of each; {REPS} runs a page"
    )
    import django

    django.setup()
    try:
        programmes = []
        for size in (FULL, SMALL):
            info = build(size)
            if info is None:
                return 1
            programmes.append(Programme(size=size, info=info))
        results = measure(programmes, PM_EMAIL)
        use_database(FULL.database)
        profile(results)
        return 0
    finally:
        from django.db import connections

        connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            for size in (FULL, SMALL):
                common.database_drop(SERVER_URL, size.database)


if __name__ == "__main__":
    sys.exit(main())
