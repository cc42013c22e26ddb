"""The load test's mix is well-formed, its TOTP codes are allauth's, and its lock agrees with the
runtime lock. Runs in `make test` without Locust (only `make bench` installs it): the mix is
plain data, and the locustfile only turns it into Locust users."""

import re
import string
import uuid
from pathlib import Path

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, generate_totp_secret, hotp_value
from django.urls import resolve

from tests.benchmarks.load.mix import PERSONAS, SIGN_IN_EVERY, Persona
from tests.benchmarks.load.totp import totp_code

ROOT = Path(__file__).resolve().parents[3]
FILLED = {"sandbox": str(uuid.uuid4()), "account": str(uuid.uuid4()), "month": "2026-11"}


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.name)
def test_one_task_in_fifty_is_a_sign_in(persona: Persona):
    # given the persona's request weights, when its sign-in weight is derived
    requests = sum(r.weight for r in persona.requests)
    # then a sign-in is exactly one task in SIGN_IN_EVERY
    assert persona.sign_in_weight * SIGN_IN_EVERY == requests + persona.sign_in_weight


@pytest.mark.parametrize("persona", PERSONAS, ids=lambda p: p.name)
def test_every_request_is_a_page_or_api_the_portal_serves(persona: Persona):
    for request in persona.requests:
        # given the names a path uses, each one the seed gives this persona's people
        names = {field for _, field, _, _ in string.Formatter().parse(request.path) if field}
        assert names <= set(persona.fills), request.name
        # when the path is filled in and resolved against the portal's URLs
        path = request.path.format(**FILLED).split("?")[0]
        match = resolve(path)
        # then it is a real view, not the API's catch-all 404, and keys go only to the API
        assert match.url_name != "not-found", path
        assert request.key <= path.startswith("/api/v1/"), request.name
        assert request.weight > 0


def test_request_names_are_unique_and_personas_weighted():
    names = [r.name for p in PERSONAS for r in p.requests]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z_]+", name) for name in names)  # BENCH load_p95_<name>
    assert all(p.weight > 0 for p in PERSONAS)
    assert [p.name for p in PERSONAS if p.second_factor] == ["manager"]


@pytest.mark.parametrize("counter", [0, 1, 59_000_000, 2**33])
def test_totp_code_is_the_one_allauth_accepts(counter):
    secret = generate_totp_secret()
    assert totp_code(secret, counter=counter) == format_hotp_value(hotp_value(secret, counter))


def _pins(path: Path) -> dict[str, str]:
    text = path.read_text()
    return dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", text, re.MULTILINE))


def test_bench_lock_shares_the_runtime_versions_and_pins_every_hash():
    # given the runtime lock and the benchmark's own (Locust, py-spy)
    runtime = _pins(ROOT / ".ci" / "requirements.lock")
    bench_lock = ROOT / ".ci" / "bench-requirements.lock"
    bench = _pins(bench_lock)
    # then installing the second over the first changes no version it shares with it
    assert {"locust", "py-spy"} <= set(bench)
    shared = set(runtime) & set(bench)
    changed = {n: (runtime[n], bench[n]) for n in shared if runtime[n] != bench[n]}
    assert changed == {}, "re-run `make lock`: the bench lock must follow the runtime lock"
    # and every package carries its hashes (make bench installs it with --require-hashes)
    blocks = re.split(r"\n(?=[a-z0-9])", bench_lock.read_text().split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
