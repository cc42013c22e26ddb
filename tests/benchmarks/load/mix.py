"""What the simulated people do, and how often: the load test's mix, in plain data.

Kept apart from the Locust users (locustfile.py) so that it can be read and tested without
Locust, which only the benchmark's own lock installs. Each persona is a kind of person the
portal serves; each of its requests has a weight. One task in fifty, whoever runs it, is a
sign-in: allauth's form and its POST (and the TOTP step for a programme manager), in a fresh
session, as a person coming back after their session ended.
"""

from dataclasses import dataclass

# One task in this many is a sign-in (the "1 in 50 requests").
SIGN_IN_EVERY = 50
# Think time between two tasks of one simulated person, in seconds (uniform): a page left open
# polls its data every few seconds, a person clicks on.
THINK_SECONDS = (1.0, 3.0)
SIGN_IN = "sign_in"


@dataclass(frozen=True)
class Request:
    """One GET a persona makes: `path` may name {sandbox}, {account} or {month}, which the
    person's seeded records fill in; `key` sends the person's API key instead of the session
    cookie."""

    name: str
    path: str
    weight: int
    key: bool = False


@dataclass(frozen=True)
class Persona:
    name: str
    weight: int  # of the simulated people, how many in `sum(weights)` are this persona
    requests: tuple[Request, ...]
    fills: tuple[str, ...] = ()  # the names its paths use, given by each seeded person
    second_factor: bool = False  # the sign-in asks for a TOTP code

    @property
    def sign_in_weight(self) -> int:
        """The sign-in task's weight: one task in SIGN_IN_EVERY, the rest the requests."""
        return sum(r.weight for r in self.requests) // (SIGN_IN_EVERY - 1)


PERSONAS = (
    # Students poll the list of their sandboxes and a running one's usage, as the pages do.
    Persona(
        "student",
        weight=6,
        requests=(
            Request("sandboxes_page", "/sandboxes/", 10),
            Request("sandboxes_api", "/api/v1/sandboxes", 14),
            Request("sandbox_usage_page", "/sandboxes/{sandbox}/", 10),
            Request("usage_api", "/api/v1/usage?sandbox={sandbox}", 15),
        ),
        fills=("sandbox",),
    ),
    # Founders read their organisation's statement and, from their own scripts, the credits
    # API with a key.
    Persona(
        "founder",
        weight=3,
        requests=(
            Request("statement_page", "/credits/accounts/{account}/statements/{month}/", 13),
            Request("balance_api", "/api/v1/credits/balance", 14, key=True),
            Request("ledger_api", "/api/v1/credits/ledger", 11, key=True),
            Request("statement_api", "/api/v1/credits/statements/{month}", 11, key=True),
        ),
        fills=("account", "month"),
    ),
    # Programme managers watch the overview and work through the review queue.
    Persona(
        "manager",
        weight=1,
        requests=(
            Request("programme_overview", "/programme/", 25),
            Request("review_queue", "/programme/applications/", 24),
        ),
        second_factor=True,
    ),
)
