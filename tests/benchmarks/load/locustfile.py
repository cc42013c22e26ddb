"""The Locust users of `make bench`'s load test: one class per persona of mix.py.

bench_load.py runs Locust headless with this file and three environment variables:

- LOAD_POPULATION: the JSON file of the seeded people (bench_load.population_write): for each
  persona a list of people, each with their e-mail, password, signed-in session, and what their
  paths name (a sandbox, an account, a month, an API key, a TOTP secret);
- LOAD_SAMPLES: where to write, as JSON, when the test started, every request as [seconds
  since then, name, milliseconds, 1 if it failed], and each failure's reason with its count,
  read back by bench_load.py to summarise each step;
- LOAD_FIRST_PERSON (optional): "persona:index,...", the first seeded person of each persona
  this run signs in as (each run takes people of its own: allauth takes a TOTP code once per
  authenticator and period);
- LOAD_STEPS (optional): "users,users,...": step the simulated people up to each count, held
  LOAD_STEP_SECONDS each (the ramp). Without it, Locust's own -u/-t apply (the baseline: one
  person at a time, LOAD_THINK=0, no think time).

Every simulated person has an address of their own (X-Forwarded-For, which uvicorn takes from
the proxy at 127.0.0.1 as `make run` starts it), as the people behind a deployment's proxy do,
so allauth's per-address sign-in limit counts each of them, not the whole test. A response is a
failure unless it is exactly what a browser or a script would accept: a 200 for a page or an
API read (a 302 to the sign-in page is a lost session, a failure), a 302 onward for a sign-in.
"""

import itertools
import json
import os
import random
import time
from http.cookiejar import Cookie
from pathlib import Path

from locust import LoadTestShape, events
from locust.contrib.fasthttp import FastHttpUser

from tests.benchmarks.load.mix import PERSONAS, SIGN_IN, THINK_SECONDS, Persona, Request
from tests.benchmarks.load.totp import TOTP_PERIOD_SECONDS, totp_code

POPULATION = json.loads(Path(os.environ["LOAD_POPULATION"]).read_text())
FIRST_PERSON = {
    name: int(first)
    for name, _, first in (
        part.partition(":") for part in os.environ.get("LOAD_FIRST_PERSON", "").split(",") if part
    )
}
THINK = THINK_SECONDS if os.environ.get("LOAD_THINK", "1") != "0" else (0.0, 0.0)
_addresses = itertools.count(1)
_recorded: dict = {"started": time.time(), "samples": [], "failures": {}}


@events.test_start.add_listener
def _start(**_kwargs):
    _recorded["started"] = time.time()


@events.request.add_listener
def _record(name, response_time, exception, start_time=None, **_kwargs):
    at = (start_time or time.time()) - _recorded["started"]
    _recorded["samples"].append(
        (round(at, 3), name, round(response_time, 2), int(exception is not None))
    )
    if exception is not None:
        reason = str(exception)[:200]
        _recorded["failures"][reason] = _recorded["failures"].get(reason, 0) + 1


@events.quitting.add_listener
def _write(**_kwargs):
    Path(os.environ["LOAD_SAMPLES"]).write_text(json.dumps(_recorded))


def _get(request: Request):
    def task(user):
        user.read(request)

    task.__name__ = request.name
    return task


def _tasks(persona: Persona) -> dict:
    tasks = {_get(request): request.weight for request in persona.requests}
    tasks[PortalUser.sign_in] = persona.sign_in_weight
    return tasks


class PortalUser(FastHttpUser):
    """A person of one persona, signed in from the start with a session the seed made, who
    reads their pages and APIs and now and then signs in again."""

    abstract = True
    persona: Persona

    def wait_time(self):
        return random.uniform(*THINK)  # noqa: S311 - think time, not a secret

    def on_start(self):
        people = POPULATION["people"][self.persona.name]
        index = FIRST_PERSON.get(self.persona.name, 0) + next(self._numbers)
        self.person = people[index % len(people)]
        # One address per simulated person, from the documentation range the test owns.
        number = next(_addresses)
        self.headers = {
            "X-Forwarded-For": f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"
        }
        self.last_totp_counter = None
        self._cookie_set(POPULATION["session_cookie"], self.person["session"])

    def _cookie_set(self, name: str, value: str) -> None:
        self.client.cookiejar.set_cookie(
            Cookie(
                0,
                name,
                value,
                None,
                False,
                POPULATION["host"],
                False,
                False,
                "/",
                True,
                False,
                None,
                True,
                None,
                None,
                {},
            )
        )

    def _cookie(self, name: str) -> str:
        return next((c.value for c in self.client.cookiejar if c.name == name), "")

    def _expect(
        self, name: str, response, status: int, location: str = "", refused: str = "-"
    ) -> None:
        went = response.headers.get("Location", "") if status == 302 else ""
        if response.status_code != status:
            response.failure(f"{name}: {response.status_code}, expected {status}")
        elif not went.startswith(location) or went.startswith(refused):
            response.failure(f"{name}: went to {went!r}")
        else:
            response.success()

    def read(self, request: Request) -> None:
        path = request.path.format(**self.person.get("paths", {}))
        headers = dict(self.headers)
        if request.key:
            headers["Authorization"] = f"Bearer {self.person['api_key']}"
        with self.client.get(
            path, name=request.name, headers=headers, allow_redirects=False, catch_response=True
        ) as response:
            self._expect(request.name, response, 200)

    def sign_in(self) -> None:
        """allauth's sign-in in a fresh session: the form (for its CSRF cookie), the POST, and
        for a programme manager the TOTP step; the person keeps the new session."""
        self.client.cookiejar.clear()
        login = POPULATION["paths"]["login"]
        with self.client.get(
            login, name=f"{SIGN_IN}_form", headers=self.headers, catch_response=True
        ) as response:
            self._expect(f"{SIGN_IN}_form", response, 200)
        form = {
            "csrfmiddlewaretoken": self._cookie(POPULATION["csrf_cookie"]),
            "login": self.person["email"],
            "password": POPULATION["password"],
        }
        with self.client.post(
            login,
            name=SIGN_IN,
            data=form,
            headers=self.headers,
            allow_redirects=False,
            catch_response=True,
        ) as response:
            # Onward: to the TOTP step for a programme manager, anywhere but back to the form
            # (a refused sign-in renders the form again) for anyone else.
            if self.persona.second_factor:
                self._expect(SIGN_IN, response, 302, POPULATION["paths"]["second_factor"])
            else:
                self._expect(SIGN_IN, response, 302, "/", refused=login)
        if self.persona.second_factor:
            self._second_factor()

    def _second_factor(self) -> None:
        # allauth takes each code once: a person who signed in during this period waits for
        # the next code, as they would at their authenticator app.
        counter = int(time.time()) // TOTP_PERIOD_SECONDS
        if counter == self.last_totp_counter:
            time.sleep((counter + 1) * TOTP_PERIOD_SECONDS - time.time() + 0.05)
            counter += 1
        self.last_totp_counter = counter
        path = POPULATION["paths"]["second_factor"]
        with self.client.get(
            path,
            name=f"{SIGN_IN}_code_form",
            headers=self.headers,
            allow_redirects=False,
            catch_response=True,
        ) as response:
            self._expect(f"{SIGN_IN}_code_form", response, 200)
        form = {
            "csrfmiddlewaretoken": self._cookie(POPULATION["csrf_cookie"]),
            "code": totp_code(self.person["totp_secret"], counter=counter),
        }
        with self.client.post(
            path,
            name=f"{SIGN_IN}_code",
            data=form,
            headers=self.headers,
            allow_redirects=False,
            catch_response=True,
        ) as response:
            self._expect(f"{SIGN_IN}_code", response, 302)


_PERSONA = {persona.name: persona for persona in PERSONAS}


class Student(PortalUser):
    persona = _PERSONA["student"]
    weight = persona.weight
    tasks = _tasks(persona)
    _numbers = itertools.count()


class Founder(PortalUser):
    persona = _PERSONA["founder"]
    weight = persona.weight
    tasks = _tasks(persona)
    _numbers = itertools.count()


class Manager(PortalUser):
    persona = _PERSONA["manager"]
    weight = persona.weight
    tasks = _tasks(persona)
    _numbers = itertools.count()


if os.environ.get("LOAD_STEPS"):

    class StepLoad(LoadTestShape):
        """Up to each count of simulated people in turn, held LOAD_STEP_SECONDS each."""

        steps = [int(n) for n in os.environ["LOAD_STEPS"].split(",")]
        step_seconds = float(os.environ["LOAD_STEP_SECONDS"])

        def tick(self):
            step = int(self.get_run_time() // self.step_seconds)
            if step >= len(self.steps):
                return None
            return self.steps[step], max(self.steps)
