"""Metering's writes: the runs (a sandbox's allocated time) and the tick that samples, charges
and enforces over them. One module per step, each returning its figures to the tick:

- runs.py: `run_open` and `run_close`, which the launcher calls when it allocates and releases
  a sandbox's resources;
- tick.py: `tick()`, run every METERING_INTERVAL seconds (Celery beat). In a fixed number of
  queries, whatever the number of sandboxes, it:
  1. opens a run for any live sandbox holding its resources that has none (runs.py) and reads
     every unsettled run;
  2. charges every complete interval of every run, and the last partial one of an ended run,
     through the ledger in one batch, keyed by (run, interval start) (billing.py);
  3. starts the stop countdown for sandboxes whose account ran dry and lifts it when the
     account is funded again (enforcement.py): it only records when they stop
     (`SandboxRun.stop_at`); the launcher stops them when that time comes (launcher.deadlines,
     on beat as often as the tick);
  4. reads telemetry (Docker stats, NVML or the simulated GPUs) and stores samples in bulk
     (sampling.py), then refreshes the per-minute and per-hour roll-ups (rollups.py);
  5. broadcasts the live messages of all the steps in one send.
- rollups.py: also `samples_prune`, the retention of raw samples (beat);
- reconciliation.py: `reconcile`, every run's charges recomputed and compared with the ledger
  (beat).

Ticks take a PostgreSQL advisory lock (try-lock: a second, concurrent tick steps aside; the
next one catches up), so the bookkeeping counters move once per interval. The ledger's
idempotency keys are what guarantee the money, lock or no lock.

Callers import from here (`from sandboxes.metering import services`); the modules are the
chapters, not separate doors.
"""

from .reconciliation import Drift, reconcile
from .rollups import samples_prune
from .runs import run_close, run_open
from .tick import TickResult, tick

__all__ = ["Drift", "TickResult", "reconcile", "run_close", "run_open", "samples_prune", "tick"]
