"""The periodic firewall check, against real iptables: drift is repaired and audited.

Needs root, iptables and docker (as tests/sandboxes/spawner/test_network.py)."""

from __future__ import annotations

import logging
import subprocess

import pytest

from portal.audit.models import AuditEvent
from sandboxes.launcher import firewall, tasks
from sandboxes.spawner import network

pytestmark = pytest.mark.django_db


def iptables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", *args], capture_output=True, text=True)  # noqa: S603,S607


def has_rule(chain: str, rule: list[str]) -> bool:
    return iptables("-C", chain, *rule).returncode == 0


OPEN_BRIDGE = network.networks()[0].bridge
RFC1918_DROP = ["-d", "10.0.0.0/8", "-i", OPEN_BRIDGE, "-j", "DROP"]
OPEN_INPUT_JUMP = ["-i", OPEN_BRIDGE, "-j", network.INPUT_CHAIN]


def test_the_check_puts_back_a_deleted_rule_and_audits_it():
    # given the firewall in place (as the hub's start leaves it)
    network.ensure()
    assert tasks.firewall_check_task() == []
    assert not AuditEvent.objects.filter(action="sandbox.firewall_repaired").exists()
    # and someone deleted the drop of 10/8 and the open network's jump to the input chain
    assert iptables("-D", network.FORWARD_CHAIN, *RFC1918_DROP).returncode == 0
    assert iptables("-D", "INPUT", *OPEN_INPUT_JUMP).returncode == 0

    # when the periodic check runs
    changed = tasks.firewall_check_task()

    # then both rules are back
    assert has_rule(network.FORWARD_CHAIN, RFC1918_DROP)
    assert has_rule("INPUT", OPEN_INPUT_JUMP)
    # and one audit event names exactly what had drifted
    [event] = AuditEvent.objects.filter(action="sandbox.firewall_repaired")
    assert event.actor is None
    assert event.data == {"changed": changed}
    assert changed == [
        f"{network.FORWARD_CHAIN} rewritten: missing -A {network.FORWARD_CHAIN} "
        + " ".join(RFC1918_DROP),
        f"INPUT missing -A INPUT {' '.join(OPEN_INPUT_JUMP)}",
    ]
    # and a run with nothing to repair records nothing
    assert tasks.firewall_check_task() == []
    assert AuditEvent.objects.filter(action="sandbox.firewall_repaired").count() == 1


def test_a_worker_that_cannot_manage_iptables_warns_once_and_does_nothing(monkeypatch, caplog):
    # given a worker not running as root, and a rule missing
    network.ensure()
    monkeypatch.setattr(firewall.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(firewall, "_warned_unmanageable", False)
    assert iptables("-D", network.FORWARD_CHAIN, *RFC1918_DROP).returncode == 0
    try:
        # when the check runs twice
        with caplog.at_level(logging.WARNING, logger=firewall.__name__):
            first, second = tasks.firewall_check_task(), tasks.firewall_check_task()

        # then it did not fail, it warned once, and it touched nothing
        assert first == second == []
        warnings = [r for r in caplog.records if "cannot manage iptables" in r.getMessage()]
        assert len(warnings) == 1
        assert not has_rule(network.FORWARD_CHAIN, RFC1918_DROP)
        assert not AuditEvent.objects.filter(action="sandbox.firewall_repaired").exists()
    finally:
        network.ensure()
    assert has_rule(network.FORWARD_CHAIN, RFC1918_DROP)
