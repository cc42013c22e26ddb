"""The metering tick over many running sandboxes, on PostgreSQL: `make bench`.

For N = 10, 100 and 1,000 simulated running sandboxes (BENCH_METERING_SIZES), each in a fresh
copy of a migrated database of its own (BENCH_METERING_DATABASE, default portal_bench_metering,
created, copied and dropped here on the server at BENCH_POSTGRES_URL), with the simulated GPU
backend and no containers: 9 in 10 sandboxes CPU-only (cpu-small), 1 in 10 holding one
simulated H100 (gpu-1), a quarter of them on organisation accounts (four members each), every
account funded through `grant_issue`, every run started 65 s (and a fraction) before the first
tick. Docker is asked at DOCKER_URL, by default a socket nothing listens on (BENCH_DOCKER_URL):
the tick's read then gives up in a millisecond, the same at every N. The broadcast goes to the
real Redis channel layer (its own prefix).

One warm-up tick charges the first six intervals; then BENCH_METERING_REPS ticks (default 5),
each 10 s after the previous one (one new interval per run), alternate with the baseline: a
bulk insert of what the tick must write at the least, its sample rows (N UsageSample rows and
one DeviceSample row per device), through the same bulk_create the tick uses. It prints

  BENCH metering_tick_queries_<N>: <q> queries (baseline <q at N=10> queries, ratio <r>)
  BENCH metering_tick_<N>: <median ms> ms (baseline <median ms> ms, ratio <r>)

where the tick's queries must not grow with N (the target), a profile of the tick at each N
(SQL, the Redis broadcast, Docker, the rest: Python), and whether the books are exact after
the ticks: every run charged exactly rate × allocated time up to the last tick's slot, in its
interval rows, in the ledger and in its counter; every transaction sums to zero; balances equal
their entries. Exit status 1 when the books are not exact; 2 when BENCH_STRICT=1 and the query
count grows with N.
"""

import datetime as dt
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_METERING_DATABASE", "portal_bench_metering")
TEMPLATE = f"{DATABASE}_template"
SIZES = [int(n) for n in os.environ.get("BENCH_METERING_SIZES", "10,100,1000").split(",")]
REPS = int(os.environ.get("BENCH_METERING_REPS", "5"))
GPU_EVERY = 10  # one sandbox in ten holds a GPU
ORG_EVERY = 4  # one in four runs on an organisation's account
ORG_MEMBERS = 4
STARTED_AGO = dt.timedelta(seconds=65)
FUNDS = 100 * 3600  # credit-seconds per account: no tick here can empty one

os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "portal.settings.test",
        "DATABASE_URL": f"{SERVER_URL}/{TEMPLATE}",
        # No connection pool: each size drops and copies databases under this one process, and a
        # pool would keep connections to the template open (CREATE DATABASE ... TEMPLATE refuses).
        "DATABASE_POOL_MAX_SIZE": "0",
        # The channel layer and the cache (test settings derive both from this), in a Redis
        # database and a prefix of this run's own.
        "TEST_REDIS_URL": os.environ.get("BENCH_METERING_REDIS_URL", "redis://127.0.0.1:6379/12"),
        "CHANNELS_PREFIX": f"bench-metering-{os.getpid()}",
        "DOCKER_URL": os.environ.get(
            "BENCH_DOCKER_URL", "unix:///tmp/bench-metering-no-docker.sock"
        ),
    }
)


# --- Databases ------------------------------------------------------------------------------


def template_create() -> None:
    """Migrate once; every size starts from a copy of this (CREATE DATABASE ... TEMPLATE)."""
    from django.core.management import call_command
    from django.db import connections

    common.database_create(SERVER_URL, TEMPLATE)
    call_command("migrate", verbosity=0, interactive=False)
    connections.close_all()


def database_switch(name: str) -> None:
    """A fresh copy of the template as this process's database."""
    from django.db import connections
    from psycopg import sql

    from portal.credits.services import system_accounts_forget

    connections.close_all()
    common.database_drop(SERVER_URL, name)
    common._maintenance(
        SERVER_URL,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)
        ),
    )
    connections["default"].settings_dict["NAME"] = name
    system_accounts_forget()  # the remembered system accounts were the last database's


# --- The population -------------------------------------------------------------------------


def populate(n: int, started: dt.datetime) -> dict:
    """`n` running sandboxes with open runs (and GPU allocations for the GPU ones), their people
    and funded accounts. Bulk inserts, except the lots: those go through `grant_issue`, the
    ledger's writer, so the books are real books."""
    from decimal import Decimal

    from django.conf import settings

    from portal.credits.models import CreditAccount, CreditGrant
    from portal.credits.services import grant_issue
    from portal.organisations.models import Membership, Organisation, Role
    from portal.users.models import User
    from sandboxes.gpus.backends import SimulatedBackend
    from sandboxes.gpus.models import GpuAllocation, GpuDevice
    from sandboxes.gpus.services import inventory_sync
    from sandboxes.launcher.models import ResourceProfile, Sandbox, SandboxImage
    from sandboxes.metering.models import SandboxRun

    gpu_boxes = [i for i in range(n) if i % GPU_EVERY == 0]
    devices_count = len(gpu_boxes) + 2  # a couple of free devices, as a real cluster has
    # The spec takes at most 99 of a model per group: 102 devices are "99xH100-80GB,3xH100-80GB".
    spec = ",".join(f"{min(99, devices_count - k)}xH100-80GB" for k in range(0, devices_count, 99))
    settings.SANDBOX_GPU_BACKEND = f"simulated:{spec}"
    inventory_sync(backend=SimulatedBackend(spec, host="bench-host"))
    devices = list(GpuDevice.objects.order_by("index"))

    users = User.objects.bulk_create(
        [
            User(
                email=f"bench{i}@example.pk",
                name=f"Bench Person {i}",
                hub_username=f"bench-{i:05d}",
                password="!bench",  # unusable: nobody signs in as these
            )
            for i in range(n)
        ]
    )
    on_org = [i for i in range(n) if i % ORG_EVERY == ORG_EVERY - 1]
    org_of = {i: k // ORG_MEMBERS for k, i in enumerate(on_org)}
    first_member = {}
    for i in on_org:
        first_member.setdefault(org_of[i], i)
    organisations = Organisation.objects.bulk_create(
        [
            Organisation(
                legal_name=f"Bench Startup {k} (Private) Limited",
                slug=f"bench-startup-{k}",
                secp_registration_number=f"{1000000 + k:07d}",
                sector="software",
                city="Lahore",
                province="punjab",
                team_size="2-5",
                data_sensitivity="internal",
                created_by=users[first_member[k]],
            )
            for k in sorted(first_member)
        ]
    )
    Membership.objects.bulk_create(
        [
            Membership(
                organisation=organisations[org_of[i]],
                user=users[i],
                role=Role.OWNER if first_member[org_of[i]] == i else Role.MEMBER,
            )
            for i in on_org
        ]
    )
    org_accounts = CreditAccount.objects.bulk_create(
        [
            CreditAccount(kind=CreditAccount.Kind.ORGANISATION, organisation=o, balance=0)
            for o in organisations
        ]
    )
    student_accounts = CreditAccount.objects.bulk_create(
        [
            CreditAccount(kind=CreditAccount.Kind.STUDENT, user=users[i], balance=0)
            for i in range(n)
            if i not in org_of
        ]
    )
    expires = started + dt.timedelta(days=30)
    for account in org_accounts + student_accounts:
        grant_issue(
            account=account,
            credit_seconds=FUNDS,
            rate_pkr_per_gpu_hour=Decimal("750.00"),
            expires_at=expires,
            source=CreditGrant.Source.APPLICATION,
            idempotency_key=f"bench-metering-funds:{account.pk}",
        )
    student_account = {a.user_id: a for a in student_accounts}

    cpu_image = SandboxImage.objects.get(slug="python-cpu")
    gpu_image = SandboxImage.objects.get(slug="pytorch-gpu")
    cpu = ResourceProfile.objects.get(slug="cpu-small")
    gpu = ResourceProfile.objects.get(slug="gpu-1")
    sandboxes = []
    for i, user in enumerate(users):
        on_gpu = i % GPU_EVERY == 0
        organisation = organisations[org_of[i]] if i in org_of else None
        sandboxes.append(
            Sandbox(
                user=user,
                organisation=organisation,
                account=org_accounts[org_of[i]] if organisation else student_account[user.pk],
                image=gpu_image if on_gpu else cpu_image,
                profile=gpu if on_gpu else cpu,
                server_name=f"sb-{i:010d}",
                status=Sandbox.Status.RUNNING,
                starting_at=started - dt.timedelta(seconds=20),
                running_at=started,
            )
        )
    sandboxes = Sandbox.objects.bulk_create(sandboxes)
    GpuAllocation.objects.bulk_create(
        [GpuAllocation(device=devices[k], sandbox=sandboxes[i]) for k, i in enumerate(gpu_boxes)]
    )
    runs = []
    for i, sandbox in enumerate(sandboxes):
        # A different fraction of a second for each run: the partial first interval and its
        # rounding differ from run to run.
        begun = started - dt.timedelta(milliseconds=(i * 37) % 1000)
        runs.append(
            SandboxRun(
                sandbox=sandbox,
                account_id=sandbox.account_id,
                rate_millicredits=sandbox.profile.charge_millicredits_per_second,
                interval_seconds=settings.METERING_INTERVAL,
                started_at=begun,
                charged_until=begun,
            )
        )
    SandboxRun.objects.bulk_create(runs)
    return {"devices": devices, "sandboxes": sandboxes}


# --- One tick, profiled ---------------------------------------------------------------------


class TickProfile:
    """Where a tick's time goes: its phases (charging, enforcement, sampling with the Docker
    read, roll-ups, the broadcast: the one async_to_sync call that sends every message to
    Redis), and its SQL statements (timed around the driver call), by verb and table."""

    # (module of sandboxes.metering.services, function): the tick's steps, each timed.
    PHASES = (
        ("billing", "charge"),
        ("enforcement", "enforce"),
        ("sampling", "sample"),
        ("rollups", "rollups_refresh"),
    )

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.statements: dict[str, float] = defaultdict(float)
        self.messages = 0

    def _timed(self, name, function, on_call=None):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                if on_call:
                    on_call(*args)

        return timed

    def __enter__(self):
        from importlib import import_module

        from django.db import connection

        from sandboxes.live import broadcast
        from sandboxes.metering import telemetry

        def counted(batch):
            self.messages += len(batch)

        self._patches = [
            (broadcast, "_send_now", broadcast._send_now, "broadcast", counted),
            (telemetry, "containers_read", telemetry.containers_read, "docker", None),
        ]
        for module_name, name in self.PHASES:
            module = import_module(f"sandboxes.metering.services.{module_name}")
            self._patches.append((module, name, getattr(module, name), name, None))
        for module, name, original, label, on_call in self._patches:
            setattr(module, name, self._timed(label, original, on_call))
        self._wrapper = connection.execute_wrapper(self._timed_execute)
        self._wrapper.__enter__()
        return self

    def _timed_execute(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            self.seconds["sql"] += elapsed
            self.statements[_label(sql)] += elapsed

    def __exit__(self, *exc):
        self._wrapper.__exit__(*exc)
        for module, name, original, *_ in self._patches:
            setattr(module, name, original)


def _label(sql: str) -> str:
    """A short, stable name for a statement: its verb and its table."""
    words = sql.replace('"', "").split()
    upper = [w.upper() for w in words]
    verb = upper[0]
    if verb == "UPDATE":
        return f"UPDATE {words[1]}"
    for marker in ("INTO", "FROM"):
        if marker in upper:
            return f"{verb} {words[upper.index(marker) + 1]}"
    return " ".join(words[:2])[:60]


def tick_once(now: dt.datetime):
    """(queries, seconds, profile, result) of one tick at `now`."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sandboxes.metering import services

    with TickProfile() as profile, CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        result = services.tick(now=now, sample=True)
        seconds = time.perf_counter() - started
    if result.skipped:
        raise SystemExit("BENCH metering: the tick stepped aside (another holds its lock?)")
    return len(captured.captured_queries), seconds, profile, result


def baseline_once(population: dict, taken_at: dt.datetime) -> float:
    """The sample rows a tick writes, bulk-inserted alone, as the tick inserts them."""
    from sandboxes.metering.models import DeviceSample, UsageSample

    usage = [
        UsageSample(
            sandbox=s,
            taken_at=taken_at,
            gpu_count=1 if s.profile.gpu_count else 0,
            gpu_util_pct=42.0 if s.profile.gpu_count else None,
            gpu_memory_used_mib=1700 if s.profile.gpu_count else None,
            gpu_power_w=330.5 if s.profile.gpu_count else None,
            gpu_temperature_c=50 if s.profile.gpu_count else None,
        )
        for s in population["sandboxes"]
    ]
    devices = [
        DeviceSample(
            device=d,
            sandbox_id=None,
            taken_at=taken_at,
            util_pct=42.0,
            memory_used_mib=1700,
            power_w=330.5,
            temperature_c=50,
        )
        for d in population["devices"]
    ]
    started = time.perf_counter()
    UsageSample.objects.bulk_create(usage, ignore_conflicts=True)
    DeviceSample.objects.bulk_create(devices, ignore_conflicts=True)
    return time.perf_counter() - started


# --- The books after the ticks --------------------------------------------------------------


def books_check(last_now: dt.datetime) -> tuple[list[str], dict]:
    """Every run charged exactly rate × allocated time, to the slot of the last tick, in its
    interval rows, its counter and the ledger; the ledger itself balanced."""
    from django.conf import settings
    from django.db.models import Sum

    from portal.credits.models import LedgerEntry, LedgerTransaction
    from sandboxes.metering import services
    from sandboxes.metering.charging import owed, slot_start
    from sandboxes.metering.models import SandboxRun, UsageCharge

    problems = []
    until = slot_start(last_now, settings.METERING_INTERVAL)
    runs = list(SandboxRun.objects.all())
    late = [r for r in runs if r.charged_until != until]
    if late:
        problems.append(f"{len(late)} runs not charged to {until:%H:%M:%S} (the last tick's slot)")
    expected = sum(
        owed(rate_millicredits=r.rate_millicredits, started_at=r.started_at, until=r.charged_until)
        for r in runs
    )
    counters = sum(r.charged_credit_seconds for r in runs)
    unpaid = sum(r.unpaid_credit_seconds for r in runs)
    rows = UsageCharge.objects.aggregate(due=Sum("due"), charged=Sum("charged"))
    ledger = -(
        LedgerEntry.objects.filter(
            transaction__kind=LedgerTransaction.Kind.USAGE,
            account__kind__in=["student", "organisation"],
        ).aggregate(s=Sum("amount"))["s"]
        or 0
    )
    figures = {
        "runs": len(runs),
        "rate x time": expected,
        "interval rows due": rows["due"] or 0,
        "interval rows charged": rows["charged"] or 0,
        "ledger usage": ledger,
        "run counters": counters,
        "unpaid": unpaid,
    }
    if not expected == figures["interval rows due"] == figures["interval rows charged"] == ledger:
        problems.append("usage differs from rate x allocated time: " + repr(figures))
    if counters != expected or unpaid:
        problems.append(f"run counters {counters} (unpaid {unpaid}) differ from {expected}")
    drift = services.reconcile(since=last_now - dt.timedelta(days=1))["drift"]
    if drift:
        problems.append(f"reconcile() finds {len(drift)} runs drifting, e.g. {drift[0]}")
    problems += common.ledger_problems()
    return problems, figures


# --- Main -----------------------------------------------------------------------------------


def measure(n: int) -> dict:
    from django.conf import settings
    from django.utils import timezone

    database_switch(DATABASE)
    first = timezone.now()
    population = populate(n, first - STARTED_AGO)
    tick_once(first)  # charges the first six intervals; finds the system accounts
    step = dt.timedelta(seconds=settings.METERING_INTERVAL)
    queries, ticks, baselines = [], [], []
    totals, statements = defaultdict(float), defaultdict(float)
    now = first
    for rep in range(REPS):
        now += step
        # Alternate which goes first, so neither always meets a cold or a warm cache.
        order = ("baseline", "tick") if rep % 2 == 0 else ("tick", "baseline")
        for kind in order:
            if kind == "baseline":
                # Far from the ticks' slots: no conflict with their rows, out of the roll-ups.
                taken_at = first - dt.timedelta(days=1, seconds=10 * rep)
                baselines.append(baseline_once(population, taken_at))
                continue
            count, seconds, profile, result = tick_once(now)
            # (A CPU-only run owes 0.05 credit-seconds a second: one of its 10-second intervals
            # in two comes to a whole credit-second, and only those make charge rows.)
            if result.runs != n or result.samples != n or result.unpaid:
                raise SystemExit(
                    f"BENCH metering: a tick over {n} runs read {result.runs} runs, took "
                    f"{result.samples} samples, left {result.unpaid} unpaid"
                )
            queries.append(count)
            ticks.append(seconds)
            for name, value in profile.seconds.items():
                totals[name] += value
            for name, value in profile.statements.items():
                statements[name] += value
            totals["messages"] += profile.messages
            totals["intervals"] += result.intervals
    problems, figures = books_check(now)
    return {
        "n": n,
        "devices": len(population["devices"]),
        "queries": queries,
        "tick": statistics.median(ticks),
        "baseline": statistics.median(baselines),
        "profile": {k: v / REPS for k, v in totals.items()},
        "statements": {k: v / REPS for k, v in statements.items()},
        "mean_tick": sum(ticks) / REPS,
        "problems": problems,
        "figures": figures,
    }


def main() -> int:
    say(
        f"BENCH setup: database {DATABASE} (copies of {TEMPLATE}), sizes {SIZES}, {REPS} ticks "
        f"each, DOCKER_URL={os.environ['DOCKER_URL']}"
    )
    # The Docker read fails at once on a closed socket; its warning, with a traceback at every
    # tick, would bury the figures.
    logging.getLogger("sandboxes.metering.telemetry").setLevel(logging.ERROR)
    try:
        import django

        django.setup()
        template_create()
        results = [measure(n) for n in SIZES]
    finally:
        from django.db import connections

        connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            common.database_drop(SERVER_URL, DATABASE)
        common.database_drop(SERVER_URL, TEMPLATE)

    base_queries = max(results[0]["queries"])
    for r in results:
        q = max(r["queries"])
        say(
            f"BENCH metering_tick_queries_{r['n']}: {q} queries "
            f"(baseline {base_queries} queries, ratio {q / base_queries:.2f})"
        )
    for r in results:
        say(
            f"BENCH metering_tick_{r['n']}: {1000 * r['tick']:.1f} ms "
            f"(baseline {1000 * r['baseline']:.1f} ms, ratio {r['tick'] / r['baseline']:.2f})"
        )
    for r in results:
        p = r["profile"]
        phases = sum(p[name] for _module, name in TickProfile.PHASES)
        rest = r["mean_tick"] - phases - p["broadcast"]
        say(
            f"BENCH profile {r['n']}: mean tick {1000 * r['mean_tick']:.1f} ms = "
            f"charge {1000 * p['charge']:.1f} + enforce {1000 * p['enforce']:.1f} + sample "
            f"{1000 * p['sample']:.1f} (Docker {1000 * p['docker']:.1f}) + roll-ups "
            f"{1000 * p['rollups_refresh']:.1f} + broadcast of {p['messages']:.0f} messages "
            f"{1000 * p['broadcast']:.1f} + rest {1000 * rest:.1f}"
            f" ms; SQL {1000 * p['sql']:.1f} ms in all ({sorted(set(r['queries']))} queries; "
            f"{p['intervals']:.0f} charges; {r['devices']} devices)"
        )
        top = sorted(r["statements"].items(), key=lambda kv: -kv[1])[:5]
        say(
            f"BENCH profile {r['n']}: slowest statements "
            + ", ".join(f"{name} {1000 * seconds:.1f} ms" for name, seconds in top)
        )
    steady = all(max(r["queries"]) == base_queries == min(r["queries"]) for r in results)
    say(
        f"BENCH targets: tick queries do not grow with N {'MET' if steady else 'NOT MET'}; "
        f"sizes={SIZES} reps={REPS} cpus={os.cpu_count()}"
    )
    failed = [r for r in results if r["problems"]]
    for r in results:
        f = r["figures"]
        if r["problems"]:
            say(f"BENCH books {r['n']}: FAIL: " + "; ".join(r["problems"]))
            continue
        say(
            f"BENCH books {r['n']}: exact ({f['runs']} runs: rate x allocated time "
            f"{f['rate x time']} credit-seconds = interval rows {f['interval rows due']} due, "
            f"{f['interval rows charged']} charged = ledger {f['ledger usage']} = run counters "
            f"{f['run counters']}; unpaid {f['unpaid']}; reconcile() without drift; "
            "transactions sum to zero, balances equal entries and lots)"
        )
    if failed:
        return 1
    return 2 if os.environ.get("BENCH_STRICT") == "1" and not steady else 0


if __name__ == "__main__":
    sys.exit(main())
