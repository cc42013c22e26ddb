"""The host's side of the engine network: an engine may answer the host, never call it.

Docker's `--internal` engine network already gives engines no route out and keeps every other
network (the sandboxes' too) from reaching them. What it leaves open is the host itself: an
engine reaches the bridge's own address (172.30.2.1), where every host service that listens on
all addresses answers (PostgreSQL, Redis, the portal, the hub). The engine runs our image, but
it parses weights files; so, as for sandboxes (sandboxes.spawner.network), a chain drops
whatever an engine sends to the host, except replies within connections the host opened (the
gateway's requests, the health probe):

    INPUT -i nac-llm0 -j NAC-LLM-INPUT     (first in INPUT)
    NAC-LLM-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    NAC-LLM-INPUT -j DROP

Idempotent (each rule checked with `iptables -C` first). Needs root and iptables, like the
sandboxes' firewall: a process without them warns once and leaves it to one that has them (the
worker that starts engines runs as root where the hub does). IPv4 only: the network has no IPv6.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

logger = logging.getLogger(__name__)

INPUT_CHAIN = "NAC-LLM-INPUT"
_warned = False


def input_rules() -> list[list[str]]:
    return [
        ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-j", "DROP"],
    ]


def manageable() -> bool:
    return os.geteuid() == 0 and shutil.which("iptables") is not None


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # -w: wait for the xtables lock (dockerd edits the tables too)
    return subprocess.run(  # noqa: S603 (fixed binary, arguments built here)
        [shutil.which("iptables") or "iptables", "-w", "10", *args],
        capture_output=True,
        text=True,
        check=check,
    )


def _has(chain: str, rule: list[str]) -> bool:
    return _iptables("-C", chain, *rule, check=False).returncode == 0


def engine_firewall_ensure(*, bridge: str) -> list[str]:
    """Put the engine network's INPUT rules in place; returns what was added ([] when all was
    there, or when this process cannot manage iptables)."""
    global _warned
    if not manageable():
        if not _warned:
            _warned = True
            logger.warning(
                "the engine network's host firewall is not ensured: this process cannot manage "
                "iptables (it needs root and iptables)"
            )
        return []
    added: list[str] = []
    if _iptables("-n", "-L", INPUT_CHAIN, check=False).returncode != 0:
        _iptables("-N", INPUT_CHAIN)
        added.append(f"chain {INPUT_CHAIN}")
    rules = input_rules()
    lines = [
        line for line in _iptables("-S", INPUT_CHAIN).stdout.splitlines() if line.startswith("-A ")
    ]
    wanted = [f"-A {INPUT_CHAIN} {' '.join(rule)}" for rule in rules]
    if lines != wanted:
        # Rewritten whole (flush, then append in order): the verdict must come last, once.
        _iptables("-F", INPUT_CHAIN)
        for rule in rules:
            _iptables("-A", INPUT_CHAIN, *rule)
        added.append(f"rules of {INPUT_CHAIN}")
    jump = ["-i", bridge, "-j", INPUT_CHAIN]
    if not _has("INPUT", jump):
        _iptables("-I", "INPUT", "1", *jump)
        added.append(f"INPUT jump for {bridge}")
    if added:
        logger.info("engine network firewall: added %s", ", ".join(added))
    return added
