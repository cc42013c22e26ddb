"""The two docker networks sandboxes run on, and the host firewall around them.

    python -m sandboxes.spawner.network ensure [--hub-port 8081]
    python -m sandboxes.spawner.network show

- `nac-sandboxes` ($SANDBOX_NETWORK), bridge `nac-sbx0`, 172.30.0.0/24: egress `open`.
- `nac-sandboxes-internal` ($SANDBOX_NETWORK_INTERNAL), bridge `nac-sbx1`, 172.30.1.0/24:
  egress `internal`. A normal bridge, not `--internal`: an `--internal` network gives its
  containers no route to the hub's address on nac-sbx0. Instead nothing from it is forwarded
  (DOCKER-USER drops it) and it is not masqueraded, so it has no way out, yet it reaches the
  host's addresses (the hub) through its gateway.
- Both: inter-container traffic off (`enable_icc=false`). The hub listens on the gateway of
  nac-sandboxes (172.30.0.1); containers on either bridge may open connections to the host
  only there, on the hub's port. Everything else on the host (PostgreSQL, Redis, the portal,
  the proxy's API, SSH ...) is dropped; replies to connections the host opened (the proxy
  talking to a sandbox) pass.
- Open egress also cannot reach link-local addresses (cloud metadata services).

Idempotent: every rule is checked (`iptables -C`, and the chain's verdict for being last)
before anything changes; a chain that is not exactly right is rewritten in one
iptables-restore transaction. Needs root and a running docker engine. IPv4 only (the networks
have no IPv6). Rules do not survive a reboot: `make run` (run-hub.sh) ensures them each start.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

LOCK_FILE = "/run/lock/nac-sandbox-firewall.lock"
INPUT_CHAIN = "NAC-SBX-INPUT"
FORWARD_CHAIN = "NAC-SBX-FORWARD"
MANAGED_LABEL = "nac.managed-by"


@dataclass(frozen=True)
class SandboxNetwork:
    name: str
    bridge: str
    subnet: str
    gateway: str
    egress: str  # "open" | "internal"


def networks() -> tuple[SandboxNetwork, SandboxNetwork]:
    """The open and the internal network, names from the environment."""
    return (
        SandboxNetwork(
            name=os.environ.get("SANDBOX_NETWORK", "nac-sandboxes"),
            bridge="nac-sbx0",
            subnet="172.30.0.0/24",
            gateway="172.30.0.1",
            egress="open",
        ),
        SandboxNetwork(
            name=os.environ.get("SANDBOX_NETWORK_INTERNAL", "nac-sandboxes-internal"),
            bridge="nac-sbx1",
            subnet="172.30.1.0/24",
            gateway="172.30.1.1",
            egress="internal",
        ),
    )


def hub_ip() -> str:
    """The address the hub listens on and containers on both networks connect to."""
    return networks()[0].gateway


class NetworkError(RuntimeError):
    pass


# --- docker -----------------------------------------------------------------------------------


def _docker_client():
    import docker

    return docker.from_env(timeout=30)


def ensure_docker_network(client, net: SandboxNetwork) -> bool:
    """Create the network unless it exists; refuse one that exists with other settings.

    Returns True when it was created."""
    import docker.errors
    from docker.types import IPAMConfig, IPAMPool

    try:
        existing = client.networks.get(net.name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None:
        attrs = existing.attrs
        options = attrs.get("Options") or {}
        subnets = [c.get("Subnet") for c in (attrs.get("IPAM") or {}).get("Config") or []]
        problems = []
        if options.get("com.docker.network.bridge.name") != net.bridge:
            problems.append(f"bridge name is not {net.bridge}")
        if options.get("com.docker.network.bridge.enable_icc") != "false":
            problems.append("inter-container traffic is enabled")
        if subnets != [net.subnet]:
            problems.append(f"subnet {subnets} is not {net.subnet}")
        if problems:
            raise NetworkError(
                f"docker network {net.name} exists with other settings ({'; '.join(problems)}); "
                f"remove it (docker network rm {net.name}) and run ensure again"
            )
        return False
    options = {
        "com.docker.network.bridge.name": net.bridge,
        "com.docker.network.bridge.enable_icc": "false",
    }
    if net.egress == "internal":
        # not NATed: even a forwarded packet would have no way back
        options["com.docker.network.bridge.enable_ip_masquerade"] = "false"
    client.networks.create(
        net.name,
        driver="bridge",
        options=options,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=net.subnet, gateway=net.gateway)]),
        labels={MANAGED_LABEL: "sandboxes.spawner.network", "nac.egress": net.egress},
        check_duplicate=True,
    )
    return True


# --- iptables ---------------------------------------------------------------------------------


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = shutil.which("iptables")
    if binary is None:
        raise NetworkError("iptables is not installed")
    # -w: wait for the xtables lock (dockerd edits the tables too)
    return subprocess.run(  # noqa: S603 (fixed binary, arguments built here)
        [binary, "-w", "10", *args], capture_output=True, text=True, check=check
    )


def _has_rule(chain: str, rule: list[str]) -> bool:
    return _iptables("-C", chain, *rule, check=False).returncode == 0


def _ensure_chain(chain: str) -> None:
    if _iptables("-n", "-L", chain, check=False).returncode != 0:
        _iptables("-N", chain)


def _ensure_rule(chain: str, rule: list[str], *, position: int | None = None) -> bool:
    """Insert (at position) or append the rule unless an identical one exists."""
    if _has_rule(chain, rule):
        return False
    if position is None:
        _iptables("-A", chain, *rule)
    else:
        _iptables("-I", chain, str(position), *rule)
    return True


def _chain_lines(chain: str) -> list[str] | None:
    """The chain's rules as `iptables -S` prints them; None when the chain does not exist."""
    listed = _iptables("-S", chain, check=False)
    if listed.returncode != 0:
        return None
    return [line for line in listed.stdout.splitlines() if line.startswith("-A ")]


def _chain_is(chain: str, rules: list[list[str]]) -> bool:
    """Every rule is there (iptables -C) and the last one, the verdict, is last and only once."""
    lines = _chain_lines(chain)
    if not lines or not all(_has_rule(chain, rule) for rule in rules):
        return False
    verdict = f"-A {chain} {' '.join(rules[-1])}"
    return lines[-1] == verdict and lines.count(verdict) == 1


def _write_chain(chain: str, lines: list[str]) -> None:
    """Replace the chain's rules in one transaction (iptables-restore --noflush flushes only the
    chains it declares), so there is no moment with the verdict missing or misplaced."""
    binary = shutil.which("iptables-restore")
    if binary is None:
        raise NetworkError("iptables-restore is not installed")
    script = "\n".join(["*filter", f":{chain} - [0:0]", *lines, "COMMIT", ""])
    subprocess.run(  # noqa: S603 (fixed binary)
        [binary, "-w", "10", "--noflush"], input=script, text=True, capture_output=True, check=True
    )


def hub_port_rule(port: int) -> list[str]:
    return ["-p", "tcp", "-d", hub_ip(), "--dport", str(port), "-j", "ACCEPT"]


def input_rules(hub_port: int) -> list[list[str]]:
    """NAC-SBX-INPUT, in order: what containers may send to the host itself."""
    return [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        hub_port_rule(hub_port),
        ["-j", "DROP"],
    ]


def forward_rules() -> list[list[str]]:
    """NAC-SBX-FORWARD (jumped to from DOCKER-USER): what may be routed through the host."""
    open_net, internal = networks()
    return [
        ["-i", internal.bridge, "-j", "DROP"],
        ["-o", internal.bridge, "-j", "DROP"],
        ["-i", open_net.bridge, "-d", "169.254.0.0/16", "-j", "DROP"],
        ["-j", "RETURN"],
    ]


@contextlib.contextmanager
def _firewall_lock():
    """One read-check-rewrite at a time across processes (two hubs, parallel test runs)."""
    os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
    with open(LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_firewall(hub_port: int) -> list[str]:
    with _firewall_lock():
        return _ensure_firewall(hub_port)


def _ensure_firewall(hub_port: int) -> list[str]:
    """Install what is missing; returns what it changed (empty on a re-run).

    Each chain is checked rule by rule (`iptables -C`) and for its verdict (DROP/RETURN) being
    last. A chain that is not exactly right is rewritten atomically; accept rules for other hub
    ports already in NAC-SBX-INPUT (a second hub, a test's hub) are kept."""
    changed: list[str] = []

    wanted = input_rules(hub_port)
    if not _chain_is(INPUT_CHAIN, wanted):
        established, port_rule, drop = wanted
        lines = _chain_lines(INPUT_CHAIN) or []
        other_ports = [
            line
            for line in lines
            if "--dport" in line and line.endswith("-j ACCEPT") and "--ctstate" not in line
        ]
        if not _has_rule(INPUT_CHAIN, port_rule):
            other_ports.append(f"-A {INPUT_CHAIN} {' '.join(port_rule)}")
        head, tail = (
            f"-A {INPUT_CHAIN} {' '.join(established)}",
            f"-A {INPUT_CHAIN} {' '.join(drop)}",
        )
        _write_chain(INPUT_CHAIN, [head, *other_ports, tail])
        changed.append(f"{INPUT_CHAIN} written (hub port {hub_port})")

    wanted = forward_rules()
    if not _chain_is(FORWARD_CHAIN, wanted):
        _write_chain(FORWARD_CHAIN, [f"-A {FORWARD_CHAIN} {' '.join(rule)}" for rule in wanted])
        changed.append(f"{FORWARD_CHAIN} written")

    # The jumps come last: the chains they lead to are complete by now.
    for net in networks():
        jump = ["-i", net.bridge, "-j", INPUT_CHAIN]
        if _ensure_rule("INPUT", jump, position=1):
            changed.append(f"INPUT {' '.join(jump)}")
    _ensure_chain("DOCKER-USER")  # dockerd creates it; exists before the first network anyway
    jump = ["-j", FORWARD_CHAIN]
    if _ensure_rule("DOCKER-USER", jump, position=1):
        changed.append(f"DOCKER-USER {' '.join(jump)}")
    return changed


def remove_hub_port(port: int) -> bool:
    """Withdraw the accept rule for one hub port (tests run hubs on throwaway ports)."""
    rule = hub_port_rule(port)
    with _firewall_lock():
        if not _has_rule(INPUT_CHAIN, rule):
            return False
        _iptables("-D", INPUT_CHAIN, *rule)
    return True


def ensure_networks() -> list[str]:
    """The two docker networks; returns the names of those it created."""
    client = _docker_client()
    try:
        return [f"network {net.name}" for net in networks() if ensure_docker_network(client, net)]
    finally:
        client.close()


def ensure(hub_port: int | None = None) -> list[str]:
    """Networks and firewall; returns a line per thing created (empty when all was there)."""
    if hub_port is None:
        hub_port = int(os.environ.get("HUB_INTERNAL_PORT", "8081"))
    return ensure_networks() + ensure_firewall(hub_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.spawner.network")
    sub = parser.add_subparsers(dest="command", required=True)
    p_ensure = sub.add_parser("ensure", help="create the sandbox networks and firewall rules")
    p_ensure.add_argument(
        "--hub-port",
        type=int,
        default=None,
        help="the hub's port containers may reach (default: $HUB_INTERNAL_PORT or 8081)",
    )
    sub.add_parser("show", help="print the sandbox firewall chains")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            for line in ensure(args.hub_port):
                print(f"added: {line}")  # noqa: T201
            print(f"sandbox networks ready; hub address {hub_ip()}")  # noqa: T201
        else:
            for chain in (INPUT_CHAIN, FORWARD_CHAIN):
                print(_iptables("-S", chain, check=False).stdout, end="")  # noqa: T201
    except (NetworkError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"network ensure failed: {exc} {detail}".strip(), file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
