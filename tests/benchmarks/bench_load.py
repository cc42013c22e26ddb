"""A load test Locust drives, against the ASGI server as `make run` starts it: `make bench`.

Seeds a database of its own (BENCH_LOAD_DATABASE, default portal_bench_load, created and dropped
here on the server at BENCH_POSTGRES_URL) with a programme in miniature: BENCH_LOAD_STUDENTS
students (default 300) with this month's allowance and a sandbox each (one in three running),
BENCH_LOAD_ORGANISATIONS founders (default 130) with an organisation, a funded credit account, an
API key and two sandboxes (one running), BENCH_LOAD_MANAGERS programme managers (default 50)
with TOTP, and applications waiting in the review queue. The running sandboxes (one in six on
a GPU) are metered by the real tick for BENCH_LOAD_TICKS intervals (default 60) before the test,
so the usage pages, statements and the overview read real charges and samples. Every person
has a signed-in session (a programme manager's passed MFA) and the same password.

Then it starts the `web` process of .procfile (uvicorn with the portal's own arguments), with
the settings `make run` uses (portal.settings.local; DEBUG off, as in production) on a free
port, and runs Locust headless (tests/benchmarks/load/locustfile.py, the mix of mix.py):

1. the baseline: one simulated person at a time, without think time, BENCH_LOAD_BASELINE_SECONDS
   (default 6) per persona;
2. the ramp: BENCH_LOAD_SECONDS (default 60) in BENCH_LOAD_STEPS steps of simulated people
   (default 25,50,100,150,200, up to BENCH_LOAD_USERS), each thinking 1-3 s between tasks;
3. the profile (BENCH_LOAD_PROFILE_SECONDS, default 20; 0 skips it): the step held longest
   once more, with py-spy sampling the server's GIL holder, to say where a request's time goes.

It prints, for each step, its rate, p50/p95/p99, errors and the server process's CPU, then

  BENCH load_rps: <req/s at the highest step held> req/s (baseline <one person> req/s, ratio r)
  BENCH load_p95: <ms> ms (baseline <ms at one person> ms, ratio r)
  BENCH load_p95_<endpoint>: <ms> ms (baseline <ms at one person> ms, ratio r)  (per endpoint)
  BENCH load_errors: <n> errors (baseline <n> errors, ratio r)

where a step is held when its p95 is at most 500 ms and none of its requests failed, with a
table of every endpoint's rate, p50/p95/p99 and errors at that step. Exit status 1 when a
request failed or the server died; 2 when BENCH_STRICT=1 and no step was held.
"""

import datetime as dt
import json
import logging
import os
import resource
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks import common  # noqa: E402
from tests.benchmarks.common import say  # noqa: E402
from tests.benchmarks.load.mix import PERSONAS, SIGN_IN  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DATABASE = os.environ.get("BENCH_LOAD_DATABASE", "portal_bench_load")
STUDENTS = int(os.environ.get("BENCH_LOAD_STUDENTS", "300"))
ORGANISATIONS = int(os.environ.get("BENCH_LOAD_ORGANISATIONS", "130"))
MANAGERS = int(os.environ.get("BENCH_LOAD_MANAGERS", "50"))
WAITING_APPLICATIONS = 40
TICKS = int(os.environ.get("BENCH_LOAD_TICKS", "60"))
USERS = int(os.environ.get("BENCH_LOAD_USERS", "200"))
STEPS = [
    int(n)
    for n in os.environ.get(
        "BENCH_LOAD_STEPS", ",".join(str(USERS * k // 8) for k in (1, 2, 4, 6, 8))
    ).split(",")
]
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "60"))
BASELINE_SECONDS = float(os.environ.get("BENCH_LOAD_BASELINE_SECONDS", "6"))
PROFILE_SECONDS = float(os.environ.get("BENCH_LOAD_PROFILE_SECONDS", "20"))
PROFILE_RATE = 100  # py-spy samples a second
SETTLE_SECONDS = 1.0  # the start of a step, while its new people arrive, is not measured
P95_TARGET_MS = 500
RUNNING_EVERY, GPU_EVERY = 3, 6  # one student sandbox in three runs; one running in six on a GPU
GPUS = 40
HOST = "127.0.0.1"
PASSWORD = "load-test-" + secrets.token_urlsafe(12)
LOAD = ROOT / "tests" / "benchmarks" / "load"

# One environment for this process (seeding, the tick) and the server: the database, the secret
# key that signs the session cookies, the pepper the keys are hashed with, the GPUs.
SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "portal.settings.local",
    "DATABASE_URL": f"{SERVER_URL}/{DATABASE}",
    "DEBUG": "False",
    "ALLOWED_HOSTS": HOST,
    "SECRET_KEY": secrets.token_urlsafe(64),
    "API_KEY_PEPPER": secrets.token_urlsafe(32),
    "MFA_ENCRYPTION_KEY": secrets.token_urlsafe(32),
    # Redis database 10 and a prefix of this run's own: no cache keys or queued tasks shared.
    "REDIS_URL": os.environ.get("BENCH_LOAD_REDIS_URL", "redis://127.0.0.1:6379/10"),
    "CACHE_KEY_PREFIX": f"bench-load-{os.getpid()}",
    "CHANNELS_PREFIX": f"bench-load-{os.getpid()}",
    "SANDBOX_GPU_BACKEND": f"simulated:{GPUS}xH100-80GB",
    "DOCKER_URL": os.environ.get("BENCH_DOCKER_URL", "unix:///tmp/bench-load-no-docker.sock"),
}
os.environ.update(SERVER_ENV)


# --- The population -------------------------------------------------------------------------


def _people(prefix: str, n: int, password_hash: str) -> list:
    """`n` people with verified addresses, in two bulk inserts (one password hash for all:
    hashing it per person would take minutes)."""
    from allauth.account.models import EmailAddress

    from portal.users.models import User

    users = User.objects.bulk_create(
        [
            User(
                email=f"{prefix}{i}@load.example.pk",
                name=f"Load {prefix.title()} {i}",
                hub_username=f"load-{prefix}-{i:04d}",
                password=password_hash,
            )
            for i in range(n)
        ]
    )
    EmailAddress.objects.bulk_create(
        [EmailAddress(user=u, email=u.email, primary=True, verified=True) for u in users]
    )
    return users


def _sandboxes(holders: list, started: dt.datetime) -> list:
    """A sandbox for each (user, organisation, account, running) in `holders`; the running ones
    with an open run (and a GPU for one in GPU_EVERY), as a launch leaves them."""
    from django.conf import settings

    from sandboxes.gpus.models import GpuAllocation, GpuDevice
    from sandboxes.launcher.models import ResourceProfile, Sandbox, SandboxImage
    from sandboxes.metering.models import SandboxRun

    images = {s.slug: s for s in SandboxImage.objects.all()}
    profiles = {p.slug: p for p in ResourceProfile.objects.all()}
    devices = iter(GpuDevice.objects.order_by("index"))
    rows, gpu, running_count = [], [], 0
    for i, (user, organisation, account, running) in enumerate(holders):
        on_gpu = running and running_count % GPU_EVERY == 0
        running_count += running
        rows.append(
            Sandbox(
                user=user,
                organisation=organisation,
                account=account,
                image=images["pytorch-gpu" if on_gpu else "python-cpu"],
                profile=profiles["gpu-1" if on_gpu else "cpu-small"],
                server_name=f"sb-{i:010d}",
                status=Sandbox.Status.RUNNING if running else Sandbox.Status.STOPPED,
                starting_at=started - dt.timedelta(seconds=20),
                running_at=started,
                stopped_at=None if running else started + dt.timedelta(minutes=1),
            )
        )
        gpu.append(on_gpu)
    sandboxes = Sandbox.objects.bulk_create(rows)
    GpuAllocation.objects.bulk_create(
        [
            GpuAllocation(device=next(devices), sandbox=s)
            for s, on in zip(sandboxes, gpu, strict=True)
            if on
        ]
    )
    SandboxRun.objects.bulk_create(
        [
            SandboxRun(
                sandbox=s,
                account_id=s.account_id,
                rate_millicredits=s.profile.charge_millicredits_per_second,
                interval_seconds=settings.METERING_INTERVAL,
                started_at=started,
                charged_until=started,
            )
            for s in sandboxes
            if s.status == Sandbox.Status.RUNNING
        ]
    )
    return sandboxes


def _signed_in(user, *, second_factor: bool = False) -> str:
    """A session as a sign-in leaves it (a programme manager's with the TOTP step recorded):
    its cookie's value."""
    from django.conf import settings
    from django.test import Client

    from tests.conftest import record_sign_in

    client = Client()
    client.force_login(user)
    if second_factor:
        record_sign_in(client.session, user, second_factor=True)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def seed() -> dict:  # noqa: PLR0915 - one population, written in order
    """The people, their money and their sandboxes; returns what the Locust users need."""
    from decimal import Decimal

    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
    from django.conf import settings
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from portal.apikeys.services import apikey_create
    from portal.credits.models import CreditGrant
    from portal.credits.services import account_for_organisation, grant_issue
    from portal.credits.services.applications import application_create, application_submit
    from portal.onboarding.allowance import student_allowance_grant
    from portal.onboarding.models import StudentProfile, University
    from portal.organisations.services import organisation_create
    from portal.users.services import programme_manager_grant
    from sandboxes.gpus.backends import SimulatedBackend
    from sandboxes.gpus.services import inventory_sync
    from sandboxes.metering.services import tick

    now = timezone.now()
    started = now - dt.timedelta(seconds=settings.METERING_INTERVAL * TICKS)
    month = f"{timezone.localdate():%Y-%m}"
    password_hash = make_password(PASSWORD)
    inventory_sync(backend=SimulatedBackend(f"{GPUS}xH100-80GB", host="bench-host"))

    students = _people("student", STUDENTS, password_hash)
    university = University.objects.create(name="Load Test University", city="Lahore")
    StudentProfile.objects.bulk_create(
        [
            StudentProfile(
                user=u,
                route=StudentProfile.Route.EMAIL_DOMAIN,
                university=university,
                programme="BS Artificial Intelligence",
                expected_graduation_year=now.year + 2,
            )
            for u in students
        ]
    )
    student_accounts = [student_allowance_grant(user=u).account for u in students]

    founders = _people("founder", ORGANISATIONS, password_hash)
    organisations, org_accounts, keys = [], [], []
    for i, founder in enumerate(founders):
        organisation = organisation_create(
            owner=founder,
            legal_name=f"Load Startup {i} (Private) Limited",
            secp_registration_number=f"{2000000 + i:07d}",
            sector="software",
            city="Karachi",
            province="sindh",
            team_size="2-5",
            data_sensitivity="internal",
        )
        account = account_for_organisation(organisation)
        grant_issue(
            account=account,
            credit_seconds=500 * 3600,
            rate_pkr_per_gpu_hour=Decimal("750.00"),
            expires_at=now + dt.timedelta(days=90),
            source=CreditGrant.Source.APPLICATION,
            idempotency_key=f"bench-load-funds:{organisation.pk}",
        )
        _key, full_key = apikey_create(
            name="load", scopes=["credits:read"], acting_user=founder, user=founder
        )
        organisations.append(organisation)
        org_accounts.append(account)
        keys.append(full_key)
        if i < WAITING_APPLICATIONS:
            application = application_create(
                organisation=organisation,
                acting_user=founder,
                title=f"Urdu speech model {i}",
                summary="Fine-tuning a speech recogniser on regional radio archives.",
                sector="software",
                requested_gpu_hours=200,
                duration_months=3,
                data_sensitivity="internal",
            )
            application_submit(application=application, acting_user=founder)

    managers = _people("manager", MANAGERS, password_hash)
    totp_secrets = []
    for manager in managers:
        programme_manager_grant(user=manager, acting_user=None)
        totp_secrets.append(generate_totp_secret())
        TOTP.activate(manager, totp_secrets[-1])

    holders = [
        (u, None, a, i % RUNNING_EVERY == 0)
        for i, (u, a) in enumerate(zip(students, student_accounts, strict=True))
    ]
    for founder, organisation, account in zip(founders, organisations, org_accounts, strict=True):
        holders += [(founder, organisation, account, True), (founder, organisation, account, False)]
    sandboxes = _sandboxes(holders, started)
    # No Docker here: the tick's container read fails and says so each time; the GPUs'
    # (simulated) telemetry is what the pages show.
    logging.getLogger("sandboxes.metering.telemetry").setLevel(logging.CRITICAL)
    for n in range(1, TICKS + 1):
        tick(now=started + dt.timedelta(seconds=settings.METERING_INTERVAL * n), sample=True)
    first_sandbox = {}
    for sandbox in sandboxes:  # a student's running one when they have one
        if sandbox.user_id not in first_sandbox or sandbox.status == "running":
            first_sandbox[sandbox.user_id] = sandbox

    return {
        "student": [
            {
                "email": u.email,
                "session": _signed_in(u),
                "paths": {"sandbox": str(first_sandbox[u.pk].public_id)},
            }
            for u in students
        ],
        "founder": [
            {
                "email": u.email,
                "session": _signed_in(u),
                "api_key": key,
                "paths": {"account": str(account.public_id), "month": month},
            }
            for u, account, key in zip(founders, org_accounts, keys, strict=True)
        ],
        "manager": [
            {"email": u.email, "session": _signed_in(u, second_factor=True), "totp_secret": s}
            for u, s in zip(managers, totp_secrets, strict=True)
        ],
    }


def population_write(path: Path, people: dict) -> None:
    """What locustfile.py reads: the people, and the names and paths a sign-in needs."""
    from django.conf import settings
    from django.urls import reverse

    path.write_text(
        json.dumps(
            {
                "host": HOST,
                "session_cookie": settings.SESSION_COOKIE_NAME,
                "csrf_cookie": settings.CSRF_COOKIE_NAME,
                "password": PASSWORD,
                "paths": {
                    "login": reverse("account_login"),
                    "second_factor": reverse("mfa_authenticate"),
                },
                "people": people,
            }
        )
    )


# --- The server, as `make run` starts it ----------------------------------------------------


def procfile_web(port: int) -> list[str]:
    """The `web` line of .procfile, the command honcho runs for `make run`, on `port`."""
    for line in (ROOT / ".procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == "web":
            command = command.replace("${PORTAL_PORT:-8000}", str(port))
            return shlex.split(command)
    raise SystemExit("BENCH load: .procfile has no web process")


def server_start(port: int, log) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603 - the project's own .procfile command
        procfile_web(port), cwd=ROOT, env={**os.environ, **SERVER_ENV}, stdout=log, stderr=log
    )


class CpuWatch:
    """The CPU seconds a process has used, read from /proc once a second: (time, seconds)."""

    def __init__(self, pid: int):
        self.pid, self.readings, self._stop = pid, [], threading.Event()
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.readings.append((time.time(), self._read()))
            except OSError:
                return
            self._stop.wait(1)

    def share(self, start: float, end: float) -> float | None:
        """Cores busy on average between two moments (1.0: one core all the time)."""
        inside = [(t, s) for t, s in self.readings if start <= t <= end]
        if len(inside) < 2:
            return None
        (t0, s0), (t1, s1) = inside[0], inside[-1]
        return (s1 - s0) / (t1 - t0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- Locust ---------------------------------------------------------------------------------


def locust(base: str, population: Path, samples: Path, *, args: list[str], env: dict) -> dict:
    """Run Locust headless on the locustfile; returns what it recorded (locustfile._write)."""
    executable = Path(sys.executable).parent / "locust"
    if not executable.exists():
        raise SystemExit("BENCH load: Locust is not installed (make bench installs it)")
    command = [
        str(executable),
        "--locustfile",
        str(LOAD / "locustfile.py"),
        "--headless",
        "--host",
        base,
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        *args,
    ]
    run_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOAD_POPULATION": str(population),
        "LOAD_SAMPLES": str(samples),
        **env,
    }
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    completed = subprocess.run(  # noqa: S603 - our own interpreter's locust, fixed arguments
        command, cwd=ROOT, env=run_env, capture_output=True, text=True, check=False
    )
    after, elapsed = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    if completed.returncode != 0 or not samples.exists():
        say(completed.stdout[-3000:] + completed.stderr[-3000:])
        raise SystemExit(f"BENCH load: locust exited with status {completed.returncode}")
    recorded = json.loads(samples.read_text())
    # Locust shares the cores with the server: what it took of them.
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    recorded["locust_cores"] = used / elapsed
    return recorded


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (what a p95 means: 95 % of requests took at most this)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def summary(samples: list, seconds: float) -> dict:
    """Rate, p50/p95/p99 and failures of `samples` ([at, name, ms, failed]) over `seconds`."""
    times = [s[2] for s in samples]
    if not times:
        return {"n": 0, "rps": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "errors": 0}
    return {
        "n": len(times),
        "rps": len(times) / seconds,
        "p50": percentile(times, 0.50),
        "p95": percentile(times, 0.95),
        "p99": percentile(times, 0.99),
        "errors": sum(s[3] for s in samples),
    }


def by_name(samples: list) -> dict[str, list]:
    named = defaultdict(list)
    for sample in samples:
        named[sample[1]].append(sample)
    return named


def most_of_a_persona(persona) -> int:
    """At most how many simulated people of `persona` the ramp has at once.

    Each simulated person signs in as a seeded one of their own, and each run takes people
    none before it took (the baseline the first of each persona, the ramp the next ones, the
    profile those after): allauth takes a TOTP code once per authenticator and period, so a
    manager's sign-in in one run would refuse the same manager's in the next."""
    return -(-max(STEPS) * persona.weight // sum(p.weight for p in PERSONAS))


def baseline(base: str, population: Path, workdir: Path) -> dict:
    """One person at a time, no think time, BASELINE_SECONDS per persona: the rate a single
    client gets (weighted by the personas' shares of the people) and each endpoint's times."""
    samples, rates = [], []
    for persona in PERSONAS:
        recorded = locust(
            base,
            population,
            workdir / f"baseline-{persona.name}.json",
            args=["-u", "1", "-r", "1", "-t", f"{BASELINE_SECONDS:g}s", persona.name.title()],
            env={"LOAD_THINK": "0"},
        )
        samples += recorded["samples"]
        rates.append((persona.weight, len(recorded["samples"]) / BASELINE_SECONDS))
    rps = sum(w * r for w, r in rates) / sum(w for w, _ in rates)
    return {
        "rps": rps,
        "all": summary(samples, BASELINE_SECONDS * len(PERSONAS)),
        "endpoints": {n: summary(s, BASELINE_SECONDS) for n, s in by_name(samples).items()},
    }


def ramp(base: str, population: Path, workdir: Path, cpu: CpuWatch) -> tuple[list, dict]:
    """The steps of simulated people, each measured on its own (after SETTLE_SECONDS), and all
    Locust recorded."""
    step_seconds = SECONDS / len(STEPS)
    recorded = locust(
        base,
        population,
        workdir / "ramp.json",
        args=[],
        env={
            "LOAD_STEPS": ",".join(map(str, STEPS)),
            "LOAD_STEP_SECONDS": f"{step_seconds:g}",
            "LOAD_FIRST_PERSON": ",".join(f"{p.name}:1" for p in PERSONAS),
        },
    )
    steps = []
    for k, users in enumerate(STEPS):
        start, end = k * step_seconds + SETTLE_SECONDS, (k + 1) * step_seconds
        inside = [s for s in recorded["samples"] if start <= s[0] < end]
        measured = end - start
        steps.append(
            {
                "users": users,
                "all": summary(inside, measured),
                "endpoints": {n: summary(s, measured) for n, s in by_name(inside).items()},
                "cpu": cpu.share(recorded["started"] + start, recorded["started"] + end),
            }
        )
    return steps, recorded


# --- The profile ----------------------------------------------------------------------------

# Where a sample of a request's thread is, by the first of these its stack passes through:
# each a place a request's time can go. Waiting counts (py-spy --idle): a request waiting on
# PostgreSQL is as slow as one computing.
PLACES = (
    # A sync-only middleware hands the rest of the request back to the event loop and its
    # thread waits there (asgiref's AsyncToSync) until the loop gets round to it.
    ("waiting for the event loop (sync/async hop)", ("CurrentThreadExecutor.run_until_future",)),
    ("password hashing (PBKDF2, sign-in)", ("django/contrib/auth/hashers.py",)),
    ("waiting for a pooled connection", ("psycopg_pool/", "get_new_connection")),
    ("SQL: psycopg and PostgreSQL's answer", ("psycopg/",)),
    ("Django ORM: compiling queries, making rows", ("django/db/",)),
    ("template rendering", ("django/template/",)),
    ("DRF: serializers, rendering", ("rest_framework/",)),
    ("Redis: cached sessions, rate limits", ("redis/",)),
    ("sessions, auth, allauth", ("django/contrib/sessions", "django/contrib/auth", "allauth/")),
    ("middleware and the sync/async hops", ("django/core/handlers/", "asgiref/")),
)
# Django runs a request's sync code in a thread of its own (asgiref's SyncToAsync); the event
# loop (uvicorn, the async parts) stays on the main thread.
REQUEST_MARK = "SyncToAsync.thread_handler"


def profile_read(raw: str) -> tuple[int, Counter, int]:
    """py-spy's raw stacks (--threads --idle) summarised: the samples taken, the samples of
    request threads by place, and how many request threads there were."""
    total, places, threads = 0, Counter(), set()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        if REQUEST_MARK not in stack:
            continue
        threads.add(stack.split(";", 1)[0])
        inside = stack.split(REQUEST_MARK, 1)[1]
        leaf = ";".join(stack.rsplit(";", 2)[-2:])  # a hop's wait is the innermost frames
        first, *rest = PLACES
        if any(m in leaf for m in first[1]):
            place = first[0]
        else:
            place = next((n for n, marks in rest if any(m in inside for m in marks)), "other")
        places[place] += int(count)
    return total, places, len(threads)


def profile(pid: int, base: str, population: Path, workdir: Path, users: int) -> None:
    """py-spy on the server while `users` simulated people run the mix: which threads serve
    the requests, how busy they are, and where a request's time goes."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        say("BENCH profile: py-spy is not installed (make bench installs it); skipped")
        return
    output = workdir / "profile.txt"
    recorder = subprocess.Popen(  # noqa: S603 - py-spy from the bench lock, fixed arguments
        [
            str(spy),
            "record",
            f"--pid={pid}",
            f"--duration={PROFILE_SECONDS:g}",
            f"--rate={PROFILE_RATE}",
            "--threads",
            "--idle",
            "--nonblocking",
            "--format=raw",
            f"--output={output}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    recorded = locust(
        base,
        population,
        workdir / "profile.json",
        args=["-u", str(users), "-r", str(users), "-t", f"{PROFILE_SECONDS + 2:g}s"],
        env={
            "LOAD_FIRST_PERSON": ",".join(f"{p.name}:{1 + most_of_a_persona(p)}" for p in PERSONAS)
        },
    )
    spy_log, _ = recorder.communicate(timeout=PROFILE_SECONDS + 60)
    if recorder.returncode != 0 or not output.exists():
        say(f"BENCH profile: py-spy could not sample the server: {spy_log.strip()[-300:]}")
        return
    load = summary(recorded["samples"], PROFILE_SECONDS + 2)
    _total, places, threads = profile_read(output.read_text())
    busy = sum(places.values())
    say(
        f"BENCH profile: {users} users, {load['rps']:.1f} req/s, p95 {load['p95']:.0f} ms; "
        f"{threads} request threads, {busy / (PROFILE_SECONDS * PROFILE_RATE):.1f} requests "
        f"in Django at once on average; where their time goes:"
    )
    for name, count in places.most_common():
        say(f"  {count / max(1, busy):6.1%}  {name}")


# --- Main -----------------------------------------------------------------------------------


def _server_log_tail(log, chars: int = 4000) -> None:
    log.seek(0)
    lines = [line for line in log.read().splitlines() if '" 200' not in line]  # access log
    if lines:
        say("BENCH server log (tail):\n" + "\n".join(lines)[-chars:])


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else ("0.00" if not value else "inf")


def report(base_line: dict, steps: list[dict], samples: list) -> dict | None:
    """The steps, the endpoints at the highest step held, the BENCH lines; that step."""
    errors = sum(s[3] for s in samples)
    say("  users   req/s    p50 ms   p95 ms   p99 ms  errors  server CPU: cores, ms a request")
    for step in steps:
        a = step["all"]
        cpu = "?"
        if step["cpu"] is not None and a["rps"]:
            # CPU a request costs the one server process: its ceiling is a core / this.
            cpu = f"{step['cpu']:.2f}, {step['cpu'] / a['rps'] * 1000:.1f}"
        say(
            f"  {step['users']:5d} {a['rps']:7.1f} {a['p50']:9.0f} {a['p95']:8.0f} "
            f"{a['p99']:8.0f} {a['errors']:7d}  {cpu}"
        )
    held = [s for s in steps if s["all"]["p95"] <= P95_TARGET_MS and not s["all"]["errors"]]
    top = max(held, key=lambda s: s["all"]["rps"]) if held else None
    shown = top or min(steps, key=lambda s: s["all"]["p95"])
    say(
        f"  per endpoint at {shown['users']} users"
        f"{'' if top else ' (no step held: the one with the lowest p95)'}:"
    )
    say("  endpoint               req/s   p50 ms   p95 ms   p99 ms  errors")
    for name, e in sorted(shown["endpoints"].items()):
        say(
            f"  {name:20s} {e['rps']:7.1f} {e['p50']:8.0f} {e['p95']:8.0f} {e['p99']:8.0f} "
            f"{e['errors']:7d}"
        )
    b = base_line
    say(
        f"BENCH load_rps: {shown['all']['rps']:.1f} req/s "
        f"(baseline {b['rps']:.1f} req/s, ratio {_ratio(shown['all']['rps'], b['rps'])})"
    )
    say(
        f"BENCH load_p95: {shown['all']['p95']:.0f} ms "
        f"(baseline {b['all']['p95']:.0f} ms, ratio {_ratio(shown['all']['p95'], b['all']['p95'])})"
    )
    for name, e in sorted(shown["endpoints"].items()):
        one = b["endpoints"].get(name, {}).get("p95", 0.0)
        say(
            f"BENCH load_p95_{name}: {e['p95']:.0f} ms "
            f"(baseline {one:.0f} ms, ratio {_ratio(e['p95'], one)})"
        )
    last = steps[-1]["all"]
    say(
        f"BENCH load_p95_at_{steps[-1]['users']}_users: {last['p95']:.0f} ms "
        f"(baseline {b['all']['p95']:.0f} ms, ratio {_ratio(last['p95'], b['all']['p95'])})"
    )
    say(
        f"BENCH load_errors: {errors} errors "
        f"(baseline {b['all']['errors']} errors, ratio {_ratio(errors, b['all']['errors'])})"
    )
    share = sum(1 for s in samples if s[1] == SIGN_IN) / max(1, len(samples))
    say(
        f"BENCH targets: p95 <= {P95_TARGET_MS} ms with 0 errors "
        f"{'MET' if top else 'NOT MET'} up to {top['users'] if top else 0} users "
        f"({top['all']['rps'] if top else 0:.1f} req/s); errors over the whole ramp {errors} "
        f"(target 0); sign-ins {share:.1%} of requests; cpus={os.cpu_count()}"
    )
    return top


def main() -> int:  # noqa: PLR0915 - set up, three runs, report, tear down
    say(
        f"BENCH setup: database {DATABASE}; {STUDENTS} students, {ORGANISATIONS} founders, "
        f"{MANAGERS} programme managers; Locust steps {STEPS} over {SECONDS:g} s, baseline "
        f"{BASELINE_SECONDS:g} s per persona; server: .procfile's web"
    )
    seeded = {"student": STUDENTS, "founder": ORGANISATIONS, "manager": MANAGERS}
    for persona in PERSONAS:
        if 1 + 2 * most_of_a_persona(persona) > seeded[persona.name]:
            raise SystemExit(f"BENCH load: too few {persona.name}s seeded for {max(STEPS)} users")
    common.database_create(SERVER_URL, DATABASE)
    process = None
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the server writes it until the end
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        # What `make run` does before it starts the server: the pages name hashed static files.
        call_command("collectstatic", verbosity=0, interactive=False)
        started = time.perf_counter()
        population = workdir / "population.json"
        population_write(population, seed())
        say(f"BENCH data: seeded in {time.perf_counter() - started:.0f} s")
        connections.close_all()  # the server is the database's only client from here on

        logging.getLogger("httpx").setLevel(logging.WARNING)  # the wait for /healthz
        port = common.free_port(HOST)
        base = f"http://{HOST}:{port}"
        process = server_start(port, log)
        common.server_wait(base, process)
        with CpuWatch(process.pid) as cpu:
            base_line = baseline(base, population, workdir)
            steps, recorded = ramp(base, population, workdir, cpu)
        errors = sum(s[3] for s in recorded["samples"])
        top = report(base_line, steps, recorded["samples"])
        say(
            f"BENCH machine: Locust took {recorded['locust_cores']:.2f} cores over the ramp; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work too)"
        )
        if PROFILE_SECONDS > 0:
            profile(process.pid, base, population, workdir, (top or steps[0])["users"])
        if process.poll() is not None:
            say(f"BENCH server: uvicorn died during the run (status {process.returncode})")
        for reason, count in sorted(recorded["failures"].items(), key=lambda f: -f[1]):
            say(f"BENCH failure: {count} x {reason}")
        if errors or process.poll() is not None:
            _server_log_tail(log)
            return 1
        strict = os.environ.get("BENCH_STRICT") == "1"
        return 2 if strict and top is None else 0
    finally:
        if process is not None:
            common.server_stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
        from django.db import connections

        connections.close_all()
        if os.environ.get("BENCH_KEEP_DATABASE") != "1":
            common.database_drop(SERVER_URL, DATABASE)


if __name__ == "__main__":
    sys.exit(main())
