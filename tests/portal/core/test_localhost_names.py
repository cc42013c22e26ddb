"""`make run` serves portal.localhost, hub.localhost and <user>.hub.localhost (issue 13, §1).

Browsers resolve *.localhost to loopback by themselves; command-line clients (curl, Python, the
portal's own hub client) go through glibc, which does so only with the myhostname NSS module
that .ci/system-deps.sh installs and enables.
"""

import ipaddress
import socket

import pytest


@pytest.mark.parametrize("name", ["portal.localhost", "hub.localhost", "t0a1b2c3d4.hub.localhost"])
def test_development_host_names_resolve_to_loopback_only(name):
    # when a command-line client resolves the name through the system resolver
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 8001, type=socket.SOCK_STREAM)}

    # then it gets loopback, and nothing else
    assert addresses
    assert all(ipaddress.ip_address(address).is_loopback for address in addresses), addresses
