"""Which replica a request goes to: the one with the fewest requests outstanding from this
process, ties broken at random, skipping those already tried for the same request.

The counts are this process's own (each worker balances its own share): cheap, exact for what
the worker can see, and with random tie-breaks several workers still spread their load.
"""

import random
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Protocol


class Target(Protocol):
    replica_id: int
    base_url: str
    api_key: str


class Router:
    def __init__(self) -> None:
        self.outstanding: Counter[int] = Counter()

    def choose(self, targets: Sequence[Target], *, tried: set[int]) -> Target | None:
        """The least-loaded target not in `tried`; None when every one was tried."""
        left = [t for t in targets if t.replica_id not in tried]
        if not left:
            return None
        fewest = min(self.outstanding[t.replica_id] for t in left)
        return random.choice([t for t in left if self.outstanding[t.replica_id] == fewest])  # noqa: S311 - load spreading, not security

    def take(self, target: Target) -> None:
        self.outstanding[target.replica_id] += 1

    def give_back(self, target: Target) -> None:
        self.outstanding[target.replica_id] -= 1
        if self.outstanding[target.replica_id] <= 0:
            del self.outstanding[target.replica_id]

    @contextmanager
    def outstanding_on(self, target: Target):
        """Count a request against `target` while it runs (also when it fails or is cancelled)."""
        self.take(target)
        try:
            yield
        finally:
            self.give_back(target)


router = Router()
