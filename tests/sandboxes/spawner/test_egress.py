"""Sandboxes reach nothing private: the egress rules, played from inside real containers.

Every address a probe aims at lives in a network namespace this module makes (behind a veth
pair, routed from the host) or on the sandbox networks themselves; nothing is sent beyond them.
Needs root, iptables and docker, like test_network.py."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandboxes.spawner import network
from sandboxes.spawner.spawner import SpawnSpec
from tests.sandboxes.hub import free_port
from tests.sandboxes.spawner.stub_portal import StubPortal, spec
from tests.sandboxes.spawner.test_spawner import make_spawner

PRIVATE_NS = "nac-test-private"
HOST_VETH, NS_VETH = "nac-tpveth0", "nac-tpveth1"
HOST_LINK, NS_LINK = "10.252.77.1", "10.252.77.2"
LISTEN_PORT = 8080
ANSWER = "10.9.9.9"  # what the test's name servers answer for every name

# One address in each dropped range that can be routed (not 0/8, loopback, multicast, and not
# 192.0.2/24, which holds this host's own address here), each answered inside PRIVATE_NS.
PRIVATE_ADDRESSES = {
    "10.0.0.0/8": "10.77.0.1",
    "100.64.0.0/10": "100.64.77.1",
    "169.254.0.0/16": "169.254.77.1",
    "172.16.0.0/12": "172.16.77.1",
    "192.0.0.0/24": "192.0.0.77",
    "192.168.0.0/16": "192.168.77.1",
    "198.18.0.0/15": "198.18.77.1",
    "198.51.100.0/24": "198.51.100.77",
    "203.0.113.0/24": "203.0.113.77",
    "240.0.0.0/4": "240.0.77.1",
}
MIRROR = PRIVATE_ADDRESSES["10.0.0.0/8"]  # the "package mirror" a site allows

# A name server: answers every A query with ANSWER and appends each query's source to a file.
DNS_SERVER = """
import socket, struct, sys
address, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((address, 53))
open(log, "a").close()
while True:
    data, peer = s.recvfrom(512)
    with open(log, "a") as f:
        f.write(peer[0] + "\\n")
    end = 12
    while data[end]:
        end += data[end] + 1
    question = data[12 : end + 5]
    answer = b""
    if data[end + 1 : end + 3] == b"\\x00\\x01":
        answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[3])
    head = data[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answer) > 0, 0, 0)
    s.sendto(head + question + answer, peer)
"""

# Runs in the sandbox: TCP connects, raw DNS queries and lookups through the engine's resolver,
# all at once (each closed target costs its whole timeout).
PROBE = """
import concurrent.futures, socket, struct, sys

def tcp(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "open"
    except OSError:
        return "closed"

def raw_dns(server):
    query = struct.pack("!HHHHHH", 0x4e41, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in "raw.outside.test".split(".")) + b"\\0"
    query += struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(query, (server, 53))
        s.recvfrom(512)
        return "open"
    except OSError:
        return "closed"

def lookup(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return "unresolved"

kinds = {"tcp": tcp, "dns": raw_dns, "name": lookup}
jobs = [arg.split("=", 1) for arg in sys.argv[1:]]
with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
    results = list(pool.map(lambda job: kinds[job[0]](job[1]), jobs))
for (kind, target), result in zip(jobs, results):
    print(kind + "=" + target, result)
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)  # noqa: S603


def quiet(*args: str) -> None:
    subprocess.run(args, capture_output=True)  # noqa: S603


def probe(docker_client, image: str, net: str, jobs: list[str], *, dns=None) -> dict[str, str]:
    """From a sandbox-like container on `net` (the spawner's user and capabilities): each job
    (`tcp=host:port`, `dns=server`, `name=hostname`) and what it found."""
    out = docker_client.containers.run(
        image,
        ["python3", "-c", PROBE, *jobs],
        network=net,
        user="1000:100",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        dns=dns,
        remove=True,
    ).decode()
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


@contextlib.contextmanager
def name_server(address: str, log: Path, *, netns: str | None = None):
    """A name server on address:53 (in `netns`, else on the host) that logs who asked."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    server = subprocess.Popen(  # noqa: S603
        [*prefix, sys.executable, "-c", DNS_SERVER, address, str(log), ANSWER],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not log.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                problem = server.communicate()[1].decode()
                raise AssertionError(f"name server on {address} did not start: {problem}")
            time.sleep(0.05)
        yield log
    finally:
        server.terminate()
        server.wait(timeout=10)


def queries(log: Path) -> list[str]:
    return log.read_text().split()


@pytest.fixture
def private_hosts(tmp_path):
    """A namespace behind a veth pair holding an address in each dropped range, with a TCP
    listener on all of them and a name server on MIRROR, each address routed from the host."""
    quiet("ip", "netns", "del", PRIVATE_NS)
    quiet("ip", "link", "del", HOST_VETH)
    accept_loop = (
        "import socket\n"
        f"s = socket.create_server(('0.0.0.0', {LISTEN_PORT}))\n"
        "while True:\n"
        "    s.accept()[0].close()\n"
    )
    listener = None
    try:
        sh("ip", "netns", "add", PRIVATE_NS)
        sh("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NS_VETH)
        sh("ip", "link", "set", NS_VETH, "netns", PRIVATE_NS)
        sh("ip", "addr", "add", f"{HOST_LINK}/30", "dev", HOST_VETH)
        sh("ip", "link", "set", HOST_VETH, "up")
        sh("ip", "-n", PRIVATE_NS, "addr", "add", f"{NS_LINK}/30", "dev", NS_VETH)
        sh("ip", "-n", PRIVATE_NS, "link", "set", NS_VETH, "up")
        sh("ip", "-n", PRIVATE_NS, "link", "set", "lo", "up")
        sh("ip", "-n", PRIVATE_NS, "route", "add", "default", "via", HOST_LINK)
        for address in PRIVATE_ADDRESSES.values():
            sh("ip", "-n", PRIVATE_NS, "addr", "add", f"{address}/32", "dev", "lo")
            # routes on the veth go with it when it is deleted
            sh("ip", "route", "add", f"{address}/32", "via", NS_LINK, "dev", HOST_VETH)
        listener = subprocess.Popen(  # noqa: S603
            ["ip", "netns", "exec", PRIVATE_NS, sys.executable, "-c", accept_loop],  # noqa: S607
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((MIRROR, LISTEN_PORT), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the private listener did not start: {exc}") from exc
                time.sleep(0.1)
        with name_server(MIRROR, tmp_path / "mirror-dns.log", netns=PRIVATE_NS) as log:
            yield log
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=10)
        quiet("ip", "netns", "del", PRIVATE_NS)
        quiet("ip", "link", "del", HOST_VETH)


@contextlib.contextmanager
def firewall(*, egress_allow: tuple[str, ...]):
    """The sandbox firewall with these exceptions (and a throwaway hub port); afterwards, the
    exceptions this machine is configured with."""
    port = free_port()
    try:
        network.ensure(hub_port=port, egress_allow=egress_allow)
        yield port
    finally:
        network.ensure(hub_port=port)
        network.remove_hub_port(port)


def tcp_jobs(addresses) -> list[str]:
    return [f"tcp={address}:{LISTEN_PORT}" for address in addresses]


def test_open_sandboxes_reach_no_private_range_but_an_allowed_one(
    docker_client, sandbox_image, private_hosts
):
    open_net, internal = (net.name for net in network.networks())
    jobs = tcp_jobs(PRIVATE_ADDRESSES.values())
    every_range_closed = {job: "closed" for job in jobs}

    # given no exception: from the open network every range is closed
    with firewall(egress_allow=()):
        assert probe(docker_client, sandbox_image, open_net, jobs) == every_range_closed

    # given the site allows its mirror's network
    with firewall(egress_allow=("10.77.0.0/24",)):
        # then the open network reaches the mirror, and still no other range
        from_open = probe(docker_client, sandbox_image, open_net, jobs)
        # and the internal network reaches nothing, the mirror included
        from_internal = probe(docker_client, sandbox_image, internal, jobs)
    assert from_open == {**every_range_closed, f"tcp={MIRROR}:{LISTEN_PORT}": "open"}
    assert from_internal == every_range_closed


def test_the_host_still_reaches_into_a_sandbox(docker_client, sandbox_image):
    # given a sandbox on the open network listening on its port (as a notebook server does)
    container = docker_client.containers.run(
        sandbox_image,
        ["python3", "-m", "http.server", "8888"],
        network=network.networks()[0].name,
        user="1000:100",
        cap_drop=["ALL"],
        detach=True,
        remove=True,
    )
    try:
        with firewall(egress_allow=()):
            container.reload()
            address = container.attrs["NetworkSettings"]["Networks"][network.networks()[0].name]
            deadline = time.monotonic() + 20
            # when the host (the proxy) connects to it, then the replies come back
            while True:
                try:
                    socket.create_connection((address["IPAddress"], 8888), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


def test_internal_sandboxes_get_a_name_server_that_answers_nothing():
    # given the portal's spec for an internal and for an open sandbox
    with StubPortal() as portal:
        spawner = make_spawner(portal, user="tdns-user", server="sb-dns")
        internal = SpawnSpec.from_json(spec(user="tdns-user", image="x", egress="internal"))
        open_ = SpawnSpec.from_json(spec(user="tdns-user", image="x", egress="open"))

        # when the spawner applies them
        spawner.apply_spawn_spec(internal)
        internal_config = dict(spawner.extra_host_config)
        spawner.apply_spawn_spec(open_)
        open_config = dict(spawner.extra_host_config)

    # then the internal container's resolver is its own gateway (firewalled), the open one's
    # the engine's
    assert internal_config["dns"] == [network.networks()[1].gateway]
    assert "dns" not in open_config


def test_internal_sandboxes_resolve_and_reach_no_outside_name(
    docker_client, sandbox_image, private_hosts, tmp_path
):
    mirror_log = private_hosts
    open_net, internal = network.networks()
    gateway = internal.gateway
    # given name servers where an internal sandbox's queries could go: one beyond the host (an
    # upstream resolver, which open egress may use), one on the host where the spawner points
    # internal sandboxes
    with (
        firewall(egress_allow=("10.77.0.0/24",)),
        name_server(gateway, tmp_path / "gateway-dns.log") as gateway_log,
    ):
        # (the test's name servers work: the open network resolves through the engine's
        # resolver forwarding to the upstream)
        control = probe(
            docker_client, sandbox_image, open_net.name, ["name=pkg.outside.test"], dns=[MIRROR]
        )
        assert control == {"name=pkg.outside.test": ANSWER}
        assert queries(mirror_log)
        asked_before = len(queries(mirror_log))

        # when an internal sandbox, configured as the spawner configures it, looks names up
        # through the engine's resolver and asks both servers directly
        jobs = ["name=pkg.outside.test", f"dns={MIRROR}", f"dns={gateway}"]
        configured = probe(
            docker_client,
            sandbox_image,
            internal.name,
            jobs,
            dns=network.sandbox_dns_servers("internal"),
        )
        # and one whose engine would forward to the upstream (the host's resolvers by default)
        upstream = probe(
            docker_client, sandbox_image, internal.name, ["name=pkg.outside.test"], dns=[MIRROR]
        )

    # then nothing resolves or answers, and no query reached either server
    assert configured == {
        "name=pkg.outside.test": "unresolved",
        f"dns={MIRROR}": "closed",
        f"dns={gateway}": "closed",
    }
    assert upstream == {"name=pkg.outside.test": "unresolved"}
    assert len(queries(mirror_log)) == asked_before
    assert queries(gateway_log) == []


def test_the_sandbox_networks_have_no_ipv6(docker_client, sandbox_image):
    network.ensure_networks()
    show = (
        "import sys\n"
        "print(len(open('/proc/net/if_inet6').read().split()),"
        " sum(l.split()[0] == '0' * 32 and l.split()[1] == '00' and l.split()[9] != 'lo'"
        " for l in open('/proc/net/ipv6_route')))\n"
    )
    for net in network.networks():
        # the network has no IPv6
        assert docker_client.networks.get(net.name).attrs["EnableIPv6"] is False
        # and a container on it has no IPv6 address at all, and no default route
        out = docker_client.containers.run(
            sandbox_image,
            ["python3", "-c", show],
            network=net.name,
            user="1000:100",
            cap_drop=["ALL"],
            remove=True,
        ).decode()
        assert out.split() == ["0", "0"], f"{net.name}: IPv6 addresses, default routes: {out}"


def test_a_sandbox_network_with_ipv6_is_refused(docker_client):
    # given a network with a sandbox network's settings but IPv6 enabled
    from docker.types import IPAMConfig, IPAMPool

    name = "nac-test-ipv6"
    with contextlib.suppress(Exception):
        docker_client.networks.get(name).remove()
    created = docker_client.networks.create(
        name,
        driver="bridge",
        enable_ipv6=True,
        options={
            "com.docker.network.bridge.name": "nac-tv6",
            "com.docker.network.bridge.enable_icc": "false",
        },
        ipam=IPAMConfig(
            pool_configs=[
                IPAMPool(subnet="172.31.250.0/24", gateway="172.31.250.1"),
                IPAMPool(subnet="fd42:77::/64", gateway="fd42:77::1"),
            ]
        ),
    )
    try:
        # when ensure meets it, then it refuses, naming IPv6
        net = network.SandboxNetwork(
            name=name,
            bridge="nac-tv6",
            subnet="172.31.250.0/24",
            gateway="172.31.250.1",
            egress="open",
        )
        with pytest.raises(network.NetworkError, match="IPv6 is enabled"):
            network.ensure_docker_network(docker_client, net)
    finally:
        created.remove()
