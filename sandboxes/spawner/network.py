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
- Open egress reaches the internet only: nothing private or special-purpose is forwarded
  (`BLOCKED_RANGES`: RFC 1918, RFC 6598, loopback, 0/8, link-local with the cloud metadata
  services, multicast, reserved, documentation and benchmarking ranges). Two exceptions:
  DNS (port 53) to the name servers the engine forwards sandboxes' queries to, when they sit on
  a private address (a site resolver, a home router), and the CIDRs in $SANDBOX_EGRESS_ALLOW
  (comma-separated; e.g. a package mirror on a private address).
- Internal sandboxes get a name server nothing answers (`sandbox_dns_servers`): the engine's
  embedded resolver would otherwise forward their queries to the host's resolvers, and some
  engines do that from the host's own namespace, which no forward rule sees.
- The FORWARD chain must jump to DOCKER-USER before anything that accepts, else none of this
  applies: ensure refuses to go on (NetworkError) when it does not.

Idempotent: every rule is checked (`iptables -C` / `-S`) before anything changes; a chain that
is not exactly right is rewritten in one iptables-restore transaction, and what was wrong is
returned (the periodic check audits it). Needs root and a running docker engine. IPv4 only:
the networks have no IPv6 (ensure refuses one that has), so containers get no IPv6 address.
Rules do not survive a reboot: `make run` (run-hub.sh) ensures them each start, and the
portal's worker re-ensures them every few minutes (sandboxes.launcher.firewall).

One module on purpose (about 550 lines): the networks and the rules around them are one
security boundary, and a reviewer should be able to read every rule that makes it in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

LOCK_FILE = "/run/lock/nac-sandbox-firewall.lock"
INPUT_CHAIN = "NAC-SBX-INPUT"
FORWARD_CHAIN = "NAC-SBX-FORWARD"
MANAGED_LABEL = "nac.managed-by"
EGRESS_ALLOW_ENV = "SANDBOX_EGRESS_ALLOW"

# Destinations no sandbox may reach through the host (RFC 6890's special-purpose registry, less
# what is routed on the public internet). 240/4 includes the broadcast 255.255.255.255.
BLOCKED_RANGES: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598, carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local: cloud metadata services
    "172.16.0.0/12",  # RFC 1918
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the limited broadcast address
)
# Exceptions that could never be right: the metadata services, loopback, the sandboxes' own
# subnets (the host and the other network), anything wider than a /8.
_NEVER_ALLOWED = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.30.0.0/23")


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


def egress_allow_parse(text: str) -> tuple[str, ...]:
    """The exceptions in $SANDBOX_EGRESS_ALLOW (comma-separated IPv4 CIDRs), validated.

    Raises NetworkError naming every bad entry; nothing is changed by a caller that parses
    first."""
    allowed: list[str] = []
    problems: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            cidr = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            problems.append(f"{entry!r} is not a network address ({exc})")
            continue
        if cidr.version != 4:
            problems.append(f"{entry!r} is IPv6 (the sandbox networks have none)")
        elif cidr.prefixlen < 8:
            problems.append(f"{entry!r} is wider than a /8")
        elif clash := next(
            (n for n in _NEVER_ALLOWED if cidr.overlaps(ipaddress.ip_network(n))), None
        ):
            problems.append(f"{entry!r} overlaps {clash}, which sandboxes may never reach")
        elif str(cidr) not in allowed:
            allowed.append(str(cidr))
    if problems:
        raise NetworkError(f"{EGRESS_ALLOW_ENV} is invalid: {'; '.join(problems)}")
    return tuple(allowed)


def egress_allow_from_env() -> tuple[str, ...]:
    return egress_allow_parse(os.environ.get(EGRESS_ALLOW_ENV, ""))


def _nameservers(path: str) -> list[str]:
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    return [
        line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1
    ]


def engine_resolvers() -> tuple[str, ...]:
    """The private IPv4 name servers the engine forwards open sandboxes' DNS queries to.

    As dockerd chooses them: the daemon's `dns` setting, else the host's resolv.conf, or
    systemd-resolved's upstream file when resolv.conf names only its local stub. Loopback
    servers are skipped (no sandbox can route to them); public ones need no exception."""
    servers: list[str] = []
    with (
        contextlib.suppress(OSError, ValueError, AttributeError),
        open("/etc/docker/daemon.json") as handle,
    ):
        servers = list(json.load(handle).get("dns") or [])
    if not servers:
        servers = _nameservers("/etc/resolv.conf")
        if all(_is_loopback(server) for server in servers):
            servers = _nameservers("/run/systemd/resolve/resolv.conf") or servers
    blocked = [ipaddress.ip_network(cidr) for cidr in BLOCKED_RANGES]
    private: list[str] = []
    for server in servers:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(server)
            if (
                address.version == 4
                and not address.is_loopback
                and any(address in cidr for cidr in blocked)
                and server not in private
            ):
                private.append(server)
    return tuple(private)


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server).is_loopback
    except ValueError:
        return False


def sandbox_dns_servers(egress: str) -> list[str] | None:
    """The `dns` container option for a sandbox: None (the engine's resolvers) for open egress.

    An internal sandbox gets its own network's gateway, where the host's firewall drops
    everything but the hub's port, so its embedded resolver can forward a query nowhere. Left
    to itself the engine forwards to the host's resolvers, from the container's namespace
    (dropped as forwarded traffic) or, for a resolver on the host's loopback, from the host's
    own namespace on some engine versions, where no forward rule applies."""
    if egress == "open":
        return None
    return [networks()[1].gateway]


# --- docker -----------------------------------------------------------------------------------


def _docker_client():
    import docker  # noqa: PLC0415 - the firewall half of this module needs no docker SDK

    return docker.from_env(timeout=30)


def docker_network_problems(
    attrs: dict, *, subnet: str, bridge: str | None = None, internal: bool | None = None
) -> list[str]:
    """How an existing Docker network (its `attrs`) differs from an isolated bridge network of
    ours: the subnet, inter-container traffic off, no IPv6 (the firewalls here are IPv4 only),
    and, where given, the bridge's name and whether it is internal. [] when it matches. The
    sandboxes' networks and the model engines' network (inference) are checked by it."""
    options = attrs.get("Options") or {}
    subnets = [c.get("Subnet") for c in (attrs.get("IPAM") or {}).get("Config") or []]
    problems = []
    if bridge is not None and options.get("com.docker.network.bridge.name") != bridge:
        problems.append(f"bridge name is not {bridge}")
    if internal and not attrs.get("Internal"):
        problems.append("it is not internal")
    if options.get("com.docker.network.bridge.enable_icc") != "false":
        problems.append("inter-container traffic is enabled")
    if subnets != [subnet]:
        problems.append(f"subnet {subnets} is not {subnet}")
    if attrs.get("EnableIPv6"):
        problems.append("IPv6 is enabled (the firewall here is IPv4 only)")
    return problems


def ensure_docker_network(client, net: SandboxNetwork) -> bool:
    """Create the network unless it exists; refuse one that exists with other settings.

    Returns True when it was created."""
    import docker.errors  # noqa: PLC0415 - as in _docker_client
    from docker.types import IPAMConfig, IPAMPool  # noqa: PLC0415 - as above

    try:
        existing = client.networks.get(net.name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None:
        problems = docker_network_problems(existing.attrs, subnet=net.subnet, bridge=net.bridge)
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
        enable_ipv6=False,
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


def forward_rules(
    egress_allow: tuple[str, ...] | None = None, resolvers: tuple[str, ...] | None = None
) -> list[list[str]]:
    """NAC-SBX-FORWARD (jumped to from DOCKER-USER): what may be routed through the host.

    Written as `iptables -S` prints them, so the chain can be compared line by line.
    `egress_allow` defaults to $SANDBOX_EGRESS_ALLOW, `resolvers` to the engine's."""
    open_net, internal = networks()
    if egress_allow is None:
        egress_allow = egress_allow_from_env()
    if resolvers is None:
        resolvers = engine_resolvers()
    source = ["-i", open_net.bridge]
    return [
        ["-i", internal.bridge, "-j", "DROP"],
        ["-o", internal.bridge, "-j", "DROP"],
        # replies within connections something else opened and the rules below let through
        [*source, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"],
        *[
            ["-d", f"{server}/32", *source, "-p", proto, "-m", proto, "--dport", "53"]
            + ["-j", "RETURN"]
            for server in resolvers
            for proto in ("udp", "tcp")
        ],
        *[["-d", cidr, *source, "-j", "RETURN"] for cidr in egress_allow],
        *[["-d", cidr, *source, "-j", "DROP"] for cidr in BLOCKED_RANGES],
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


def ensure_firewall(hub_port: int, egress_allow: tuple[str, ...] | None = None) -> list[str]:
    if egress_allow is None:
        egress_allow = egress_allow_from_env()
    with _firewall_lock():
        return _ensure_firewall(hub_port, egress_allow)


def _assert_forward_reaches_docker_user() -> None:
    """Every forwarded packet must meet DOCKER-USER before anything can accept it.

    dockerd puts the jump first in FORWARD; a host firewall (or dockerd with `"iptables": false`)
    that accepts earlier, or drops the jump, would leave the sandboxes' egress rules unapplied."""
    lines = _chain_lines("FORWARD")
    jump = "-A FORWARD -j DOCKER-USER"
    if not lines or jump not in lines:
        raise NetworkError(
            "the FORWARD chain does not jump to DOCKER-USER, so the sandbox egress rules would "
            'never apply; is docker managing iptables (its "iptables" setting)? Restart '
            "dockerd to restore the jump, then run ensure again"
        )
    earlier = [
        line
        for line in lines[: lines.index(jump)]
        if line.split(" -j ", 1)[-1].split()[0] not in ("DROP", "REJECT", "LOG")
    ]
    if earlier:
        raise NetworkError(
            "the FORWARD chain lets packets through before its jump to DOCKER-USER "
            f"({'; '.join(earlier)}), so the sandbox egress rules would not apply; move the "
            "jump first (iptables -I FORWARD 1 -j DOCKER-USER) or remove those rules"
        )


def _differences(current: list[str], wanted: list[str]) -> str:
    missing = [line for line in wanted if line not in current]
    unexpected = [line for line in current if line not in wanted]
    parts = [f"missing {line}" for line in missing] + [f"unexpected {line}" for line in unexpected]
    return "; ".join(parts) or "rules out of order"


def _ensure_firewall(hub_port: int, egress_allow: tuple[str, ...]) -> list[str]:
    """Install what is missing; returns what it changed, naming what was wrong (empty on a
    re-run).

    NAC-SBX-INPUT is checked rule by rule (`iptables -C`) and for its DROP being last; accept
    rules for other hub ports already there (a second hub, a test's hub) are kept.
    NAC-SBX-FORWARD is ours alone and must read exactly as `forward_rules` says, in order.
    A chain that is not right is rewritten atomically; nothing changes when FORWARD does not
    reach DOCKER-USER first."""
    _assert_forward_reaches_docker_user()
    changed: list[str] = []

    wanted = input_rules(hub_port)
    if not _chain_is(INPUT_CHAIN, wanted):
        established, port_rule, drop = wanted
        lines = _chain_lines(INPUT_CHAIN)
        missing = [
            " ".join(rule) for rule in wanted if lines is None or not _has_rule(INPUT_CHAIN, rule)
        ]
        other_ports = [
            line
            for line in lines or []
            if "--dport" in line and line.endswith("-j ACCEPT") and "--ctstate" not in line
        ]
        if not _has_rule(INPUT_CHAIN, port_rule):
            other_ports.append(f"-A {INPUT_CHAIN} {' '.join(port_rule)}")
        head, tail = (
            f"-A {INPUT_CHAIN} {' '.join(established)}",
            f"-A {INPUT_CHAIN} {' '.join(drop)}",
        )
        _write_chain(INPUT_CHAIN, [head, *other_ports, tail])
        if lines is None:
            changed.append(f"{INPUT_CHAIN} created (hub port {hub_port})")
        else:
            detail = "; ".join(f"missing {rule}" for rule in missing) or "DROP not last"
            changed.append(f"{INPUT_CHAIN} rewritten (hub port {hub_port}): {detail}")

    wanted_lines = [f"-A {FORWARD_CHAIN} {' '.join(rule)}" for rule in forward_rules(egress_allow)]
    current = _chain_lines(FORWARD_CHAIN)
    if current != wanted_lines:
        _write_chain(FORWARD_CHAIN, wanted_lines)
        if current is None:
            changed.append(f"{FORWARD_CHAIN} created")
        else:
            changed.append(f"{FORWARD_CHAIN} rewritten: {_differences(current, wanted_lines)}")

    # The jumps come last: the chains they lead to are complete by now.
    for net in networks():
        jump = ["-i", net.bridge, "-j", INPUT_CHAIN]
        if _ensure_rule("INPUT", jump, position=1):
            changed.append(f"INPUT missing -A INPUT {' '.join(jump)}")
    # Our jump must be DOCKER-USER's first rule: anything before it could accept.
    jump_line = f"-A DOCKER-USER -j {FORWARD_CHAIN}"
    docker_user = _chain_lines("DOCKER-USER") or []
    if docker_user[:1] != [jump_line] or docker_user.count(jump_line) != 1:
        while _has_rule("DOCKER-USER", ["-j", FORWARD_CHAIN]):
            _iptables("-D", "DOCKER-USER", "-j", FORWARD_CHAIN)
        _iptables("-I", "DOCKER-USER", "1", "-j", FORWARD_CHAIN)
        problem = "not first" if jump_line in docker_user else "missing"
        changed.append(f"DOCKER-USER {problem} {jump_line}")
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


def ensure(hub_port: int | None = None, egress_allow: tuple[str, ...] | None = None) -> list[str]:
    """Networks and firewall; returns a line per thing created or repaired (empty when all was
    there). `egress_allow` defaults to $SANDBOX_EGRESS_ALLOW, read (and refused when invalid)
    before anything changes."""
    if hub_port is None:
        hub_port = int(os.environ.get("HUB_INTERNAL_PORT", "8081"))
    if egress_allow is None:
        egress_allow = egress_allow_from_env()
    else:
        egress_allow = egress_allow_parse(",".join(egress_allow))
    return ensure_networks() + ensure_firewall(hub_port, egress_allow)


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
