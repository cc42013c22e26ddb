"""The sandbox networks and host firewall, checked with real containers.

Needs root, iptables and docker (CI has all three)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time

import pytest

from sandboxes.spawner import network
from tests.sandboxes.hub import free_port

OUTSIDE_NS = "nac-test-outside"


def iptables_check(chain: str, rule: list[str]) -> bool:
    return subprocess.run(["iptables", "-C", chain, *rule], capture_output=True).returncode == 0  # noqa: S603,S607


@contextlib.contextmanager
def tcp_listener(host: str, port: int):
    """Accept and close connections on host:port until the block ends."""
    server = socket.create_server((host, port))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


def can_connect(docker_client, image: str, net: str, targets: list[tuple[str, int]]) -> dict:
    """From a sandbox-like container on `net`: which host:port targets accept a TCP connection."""
    probe = (
        "import socket,sys\n"
        "for t in sys.argv[1:]:\n"
        "    h,p=t.rsplit(':',1)\n"
        "    try:\n"
        "        socket.create_connection((h,int(p)),timeout=2).close(); print(t,'open')\n"
        "    except OSError: print(t,'closed')\n"
    )
    out = docker_client.containers.run(
        image,
        ["python3", "-c", probe, *[f"{h}:{p}" for h, p in targets]],
        network=net,
        user="1000:100",
        cap_drop=["ALL"],
        remove=True,
    ).decode()
    result = dict(line.split() for line in out.splitlines())
    return {target: result[f"{target[0]}:{target[1]}"] == "open" for target in targets}


@pytest.fixture
def outside_host():
    """A host beyond the machine: a network namespace behind a veth pair, with a listener.

    Traffic from a sandbox to it is forwarded by the host, like traffic to the internet."""

    def sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)  # noqa: S603

    subprocess.run(["ip", "netns", "del", OUTSIDE_NS], capture_output=True)  # noqa: S603,S607
    subprocess.run(["ip", "link", "del", "nac-tveth0"], capture_output=True)  # noqa: S603,S607
    sh("ip", "netns", "add", OUTSIDE_NS)
    sh("ip", "link", "add", "nac-tveth0", "type", "veth", "peer", "name", "nac-tveth1")
    sh("ip", "link", "set", "nac-tveth1", "netns", OUTSIDE_NS)
    sh("ip", "addr", "add", "10.251.0.1/30", "dev", "nac-tveth0")
    sh("ip", "link", "set", "nac-tveth0", "up")
    sh("ip", "-n", OUTSIDE_NS, "addr", "add", "10.251.0.2/30", "dev", "nac-tveth1")
    sh("ip", "-n", OUTSIDE_NS, "link", "set", "nac-tveth1", "up")
    sh("ip", "-n", OUTSIDE_NS, "link", "set", "lo", "up")
    sh("ip", "-n", OUTSIDE_NS, "route", "add", "default", "via", "10.251.0.1")
    # a bare accept loop (http.server would first try reverse DNS through the default route)
    accept_loop = (
        "import socket\n"
        "s = socket.create_server(('10.251.0.2', 8080))\n"
        "while True:\n"
        "    s.accept()[0].close()\n"
    )
    listener = subprocess.Popen(  # noqa: S603
        ["ip", "netns", "exec", OUTSIDE_NS, "python3", "-c", accept_loop],  # noqa: S607
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("10.251.0.2", 8080), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the outside listener did not start: {exc}") from exc
                time.sleep(0.1)
        yield ("10.251.0.2", 8080)
    finally:
        listener.terminate()
        listener.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", OUTSIDE_NS], capture_output=True)  # noqa: S603,S607
        subprocess.run(["ip", "link", "del", "nac-tveth0"], capture_output=True)  # noqa: S603,S607


def test_ensure_is_idempotent_and_leaves_the_rules_in_place(docker_client):
    port = free_port()
    try:
        network.ensure(hub_port=port)
        # when it runs again, nothing is added
        assert network.ensure(hub_port=port) == []
        # then the networks have the isolating settings
        for net in network.networks():
            attrs = docker_client.networks.get(net.name).attrs
            assert attrs["Options"]["com.docker.network.bridge.name"] == net.bridge
            assert attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
            assert attrs["IPAM"]["Config"][0]["Subnet"] == net.subnet
            assert iptables_check("INPUT", ["-i", net.bridge, "-j", network.INPUT_CHAIN])
        internal = docker_client.networks.get(network.networks()[1].name).attrs
        assert internal["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        for rule in network.input_rules(port):
            assert iptables_check(network.INPUT_CHAIN, rule)
        for rule in network.forward_rules():
            assert iptables_check(network.FORWARD_CHAIN, rule)
        assert iptables_check("DOCKER-USER", ["-j", network.FORWARD_CHAIN])
        # and the chain ends in DROP, after the accepts
        chain = subprocess.run(  # noqa: S603
            ["iptables", "-S", network.INPUT_CHAIN],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,  # noqa: S607
        ).stdout.splitlines()
        assert chain[-1] == f"-A {network.INPUT_CHAIN} -j DROP"
        assert sum("--ctstate" in line for line in chain) == 1
    finally:
        network.remove_hub_port(port)
    assert not iptables_check(network.INPUT_CHAIN, network.hub_port_rule(port))


def iptables(*args: str) -> list[str]:
    listed = subprocess.run(["iptables", *args], capture_output=True, text=True, check=True)  # noqa: S603,S607
    return listed.stdout.splitlines()


def test_ensure_repairs_chains_whose_verdict_is_not_last_and_keeps_other_hub_ports():
    first, second = free_port(), free_port()
    network.ensure(hub_port=first)
    try:
        # given the forward chain's drops moved behind its RETURN, and the input DROP removed
        internal_out = ["-i", network.networks()[1].bridge, "-j", "DROP"]
        iptables("-D", network.FORWARD_CHAIN, *internal_out)
        iptables("-A", network.FORWARD_CHAIN, *internal_out)
        iptables("-D", network.INPUT_CHAIN, "-j", "DROP")

        # when ensure runs for a second hub port
        changed = network.ensure(hub_port=second)

        # then both chains are whole again, verdict last, and the first hub's port is kept
        assert len(changed) == 2
        forward = iptables("-S", network.FORWARD_CHAIN)
        assert forward[-1] == f"-A {network.FORWARD_CHAIN} -j RETURN"
        assert sum(line.endswith("-i nac-sbx1 -j DROP") for line in forward) == 1
        inputs = iptables("-S", network.INPUT_CHAIN)
        assert inputs[-1] == f"-A {network.INPUT_CHAIN} -j DROP"
        assert "ESTABLISHED" in inputs[1]
        assert iptables_check(network.INPUT_CHAIN, network.hub_port_rule(first))
        assert iptables_check(network.INPUT_CHAIN, network.hub_port_rule(second))
        assert network.ensure(hub_port=second) == []
    finally:
        network.remove_hub_port(first)
        network.remove_hub_port(second)


def test_sandboxes_reach_the_hub_port_and_nothing_else(docker_client, sandbox_image, outside_host):
    # given the hub's port and another service listening on every host address, and the
    # outside host allowed (its address is private; see test_egress.py for the ranges)
    hub_port, other_port = free_port(), free_port()
    network.ensure(hub_port=hub_port, egress_allow=("10.251.0.0/30",))
    hub_ip = network.hub_ip()
    try:
        with tcp_listener(hub_ip, hub_port), tcp_listener("0.0.0.0", other_port):  # noqa: S104
            targets = [
                (hub_ip, hub_port),
                (hub_ip, other_port),
                (network.networks()[1].gateway, other_port),
                ("172.17.0.1", other_port),  # the default docker bridge's host address
                outside_host,
            ]
            open_net = can_connect(
                docker_client, sandbox_image, network.networks()[0].name, targets
            )
            internal = can_connect(
                docker_client, sandbox_image, network.networks()[1].name, targets
            )
    finally:
        network.ensure(hub_port=hub_port)  # this machine's own exceptions again
        network.remove_hub_port(hub_port)

    # then both reach the hub, neither reaches another host port, only `open` goes outside
    assert open_net == {
        (hub_ip, hub_port): True,
        (hub_ip, other_port): False,
        (network.networks()[1].gateway, other_port): False,
        ("172.17.0.1", other_port): False,
        outside_host: True,
    }
    assert internal == {**open_net, outside_host: False}


def forward_chain() -> list[str]:
    return iptables("-S", network.FORWARD_CHAIN)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("10.20.0.0/16, banana", "'banana' is not a network address"),
        ("10.20.0.1/16", "'10.20.0.1/16' is not a network address"),  # host bits set
        ("fd00::/64", "IPv6"),
        ("0.0.0.0/0", "wider than a /8"),
        ("169.254.169.254/32", "overlaps 169.254.0.0/16"),
        ("172.30.0.0/16", "overlaps 172.30.0.0/23"),
        ("127.0.0.1/32", "overlaps 127.0.0.0/8"),
    ],
)
def test_a_bad_egress_exception_is_refused_and_changes_nothing(monkeypatch, capsys, value, named):
    # given a firewall in place, one of its drops gone astray
    network.ensure(hub_port=8081)
    dropped = ["-d", "192.168.0.0/16", "-i", network.networks()[0].bridge, "-j", "DROP"]
    iptables("-D", network.FORWARD_CHAIN, *dropped)
    before = forward_chain()
    try:
        # when the exceptions setting is not a list of IPv4 networks
        monkeypatch.setenv(network.EGRESS_ALLOW_ENV, value)
        with pytest.raises(network.NetworkError, match=named) as raised:
            network.ensure(hub_port=8081)
        # then the error names the setting, and the command says so and fails
        assert network.EGRESS_ALLOW_ENV in str(raised.value)
        assert network.main(["ensure", "--hub-port", "8081"]) == 1
        assert named in capsys.readouterr().err
        # and nothing was changed, not even the repair
        assert forward_chain() == before
    finally:
        monkeypatch.delenv(network.EGRESS_ALLOW_ENV)
        network.ensure(hub_port=8081)
    assert iptables_check(network.FORWARD_CHAIN, dropped)


def test_egress_exceptions_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(network.EGRESS_ALLOW_ENV, " 10.20.0.0/16,,192.168.7.0/24 ,10.20.0.0/16")
    assert network.egress_allow_from_env() == ("10.20.0.0/16", "192.168.7.0/24")
    # an exception comes before the drop of its range, for the open network only
    rules = network.forward_rules()
    allow = ["-d", "10.20.0.0/16", "-i", network.networks()[0].bridge, "-j", "RETURN"]
    drop = ["-d", "10.0.0.0/8", "-i", network.networks()[0].bridge, "-j", "DROP"]
    assert rules.index(allow) < rules.index(drop)
    assert rules.index(["-i", network.networks()[1].bridge, "-j", "DROP"]) == 0


def test_ensure_refuses_a_forward_chain_that_accepts_before_docker_user():
    # given the firewall with one drop gone, and a rule that accepts ahead of DOCKER-USER
    network.ensure(hub_port=8081)
    dropped = ["-d", "10.0.0.0/8", "-i", network.networks()[0].bridge, "-j", "DROP"]
    iptables("-D", network.FORWARD_CHAIN, *dropped)
    early_accept = ["-i", "nac-tbogus0", "-j", "ACCEPT"]  # no such interface: harmless
    iptables("-I", "FORWARD", "1", *early_accept)
    before = forward_chain()
    try:
        # when ensure runs, then it refuses loudly, naming the rule
        with pytest.raises(network.NetworkError, match="before its jump to DOCKER-USER") as err:
            network.ensure(hub_port=8081)
        assert "-A FORWARD -i nac-tbogus0 -j ACCEPT" in str(err.value)
        # and changed nothing (the missing drop is not quietly repaired behind a bypass)
        assert forward_chain() == before
    finally:
        iptables("-D", "FORWARD", *early_accept)
        network.ensure(hub_port=8081)
    assert iptables_check(network.FORWARD_CHAIN, dropped)


def test_ensure_puts_its_jump_first_in_docker_user():
    # given someone accepted everything in DOCKER-USER ahead of the sandbox chain
    network.ensure(hub_port=8081)
    accept = ["-i", "nac-tbogus0", "-j", "ACCEPT"]
    iptables("-I", "DOCKER-USER", "1", *accept)
    try:
        # when ensure runs, then the sandbox chain is first again, and it says so
        changed = network.ensure(hub_port=8081)
        assert changed == [f"DOCKER-USER not first -A DOCKER-USER -j {network.FORWARD_CHAIN}"]
        assert iptables("-S", "DOCKER-USER")[1] == f"-A DOCKER-USER -j {network.FORWARD_CHAIN}"
    finally:
        iptables("-D", "DOCKER-USER", *accept)
    assert network.ensure(hub_port=8081) == []
