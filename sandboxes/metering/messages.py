"""Metering's live messages (their contract: sandboxes/live/MESSAGES.md), each built in ONE
place: the tick sends them (services/), and a page's first paint reads the same shape from the
selectors (`account_snapshot`, `cluster_snapshot`), so a page and the stream that follows it
cannot disagree on a field.

- `usage.sample`: one sandbox's latest readings, to its owner and paying organisation;
- `cluster.gpus`: every GPU, who holds it and its readings, to the programme's cluster stream;
- `credits.balance`: an account's balance, burn rate and runway;
- `credits.warning`: an account ran dry (the stop countdown), has credits again, or is low.

Builders only: they take what was read and return dicts; nothing here reads the database.
"""

from __future__ import annotations

import datetime as dt

from portal.credits.units import display_gpu_hours
from sandboxes.live import broadcast

READINGS = ("util_pct", "memory_used_mib", "power_w", "temperature_c")

WARNING_TEXT = {
    "exhausted": "The GPU credits have run out: running sandboxes stop at the time shown.",
    "restored": "The account has GPU credits again: the sandboxes keep running.",
    "threshold": "GPU credits are running low.",
}


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def person_label(user) -> str:
    return user.get_full_name() or user.email


def reading_fields(reading) -> dict:
    """A GPU's readings as the messages carry them; None where there is no reading."""
    return {name: getattr(reading, name, None) for name in READINGS}


# --- usage.sample -----------------------------------------------------------------------------


def usage_sample_message(*, run, row, gpus, container, simulated: bool, at: dt.datetime) -> dict:
    """`usage.sample` of a run's sandbox: `row` is its UsageSample, `gpus` (device, reading)
    pairs of the GPUs it holds, `container` its Docker reading (or None)."""
    sandbox = run.sandbox
    return {
        "type": "usage.sample",
        "sandbox": str(sandbox.public_id),
        "user": person_label(sandbox.user),
        "at": iso(at),
        "simulated": simulated,
        "gpu_util_pct": row.gpu_util_pct,
        "gpu_memory_used_mib": row.gpu_memory_used_mib,
        "gpu_memory_total_mib": sum(d.memory_mib for d, _r in gpus) if gpus else None,
        "gpu_power_w": row.gpu_power_w,
        "gpu_temperature_c": row.gpu_temperature_c,
        "cpu_pct": row.cpu_pct,
        "memory_used_mib": row.memory_used_mib,
        "memory_limit_mib": container.memory_limit_mib if container else None,
        "charged_credit_seconds": run.charged_credit_seconds,
        "gpus": [
            {
                "uuid": d.uuid,
                "index": d.index,
                "util_pct": r.util_pct if r else None,
                "memory_used_mib": r.memory_used_mib if r else None,
                "memory_total_mib": d.memory_mib,
                "power_w": r.power_w if r else None,
                "temperature_c": r.temperature_c if r else None,
            }
            for d, r in gpus
        ],
    }


# --- cluster.gpus -----------------------------------------------------------------------------


# A device held by a model deployment's replica (inference) rather than a sandbox: shown as held
# by the programme's own model serving.
SERVING = "serving"
SERVING_LABEL = "Model serving"


def gpu_tile(device, sandbox, **reading) -> dict:
    """One GPU of the `cluster.gpus` message: the device, who holds it (None: free; SERVING: a
    model deployment), and its readings (util_pct, memory_used_mib, power_w, temperature_c;
    None where unknown)."""
    holder = None
    if sandbox == SERVING:
        holder = {"sandbox": None, "user": SERVING_LABEL, "organisation": None, "serving": True}
    elif sandbox is not None:
        holder = {
            "sandbox": str(sandbox.public_id),
            "user": person_label(sandbox.user),
            "organisation": str(sandbox.organisation) if sandbox.organisation_id else None,
        }
    return {
        "uuid": device.uuid,
        "index": device.index,
        "model": device.model,
        "mig_profile": device.mig_profile,
        "simulated": device.simulated,
        "health": device.health,
        "holder": holder,
        "memory_total_mib": device.memory_mib,
        **reading,
    }


def cluster_message(*, gpus, at: dt.datetime) -> dict:
    """`cluster.gpus`: `gpus` is (device, holding sandbox, SERVING or None, readings dict) per
    GPU."""
    return {
        "type": "cluster.gpus",
        "at": iso(at),
        "gpus": [gpu_tile(device, sandbox, **readings) for device, sandbox, readings in gpus],
    }


# --- credits.balance and credits.warning ------------------------------------------------------


def balance_message(*, account, burn_millicredits: int, at: dt.datetime) -> dict:
    """`credits.balance`: the account's balance, and its burn rate and runway while it burns
    `burn_millicredits` a second (its open runs' rates)."""
    balance = account.balance or 0
    burn = burn_millicredits
    return {
        "type": "credits.balance",
        "account": str(account.public_id),
        "balance_credit_seconds": balance,
        "balance_gpu_hours": str(display_gpu_hours(balance)),
        "burn_credit_seconds_per_hour": burn * 3600 // 1000,
        "runway_seconds": balance * 1000 // burn if burn else None,
        "at": iso(at),
    }


def account_groups(account, runs) -> list[str]:
    """Who watches an account: its student, or its organisation, and everyone running on it."""
    groups = []
    if account.organisation_id:
        groups.append(broadcast.organisation_group(account.organisation_id))
    elif account.user_id:
        groups.append(broadcast.user_group(account.user_id))
    for run in runs:
        group = broadcast.user_group(run.sandbox.user_id)
        if group not in groups:
            groups.append(group)
    return groups


def warning_message(*, account, kind: str, runs, threshold: int | None = None) -> dict:
    """`credits.warning` of `kind` exhausted, restored or threshold, about the account's open
    `runs` (an exhausted one says when the first of them stops)."""
    stops = [run.stop_at for run in runs if run.stop_at is not None]
    return {
        "type": "credits.warning",
        "account": str(account.public_id),
        "kind": kind,
        "threshold_percent": threshold,
        "message": WARNING_TEXT[kind],
        "stop_at": iso(min(stops)) if stops and kind == "exhausted" else None,
        "sandboxes": [str(run.sandbox.public_id) for run in runs],
    }
