"""Hairpin: qubes behind the edge reach a forward through the edge's LAN address, as a LAN
client would; only forwards whose srchost admits the qubes' addresses hairpin."""

import time
from collections.abc import Iterator

import pytest
from labnet import connect, peer_echo_server

from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient, ForwardState, HopState

pytestmark = pytest.mark.lab

APPLY_TIMEOUT = 20.0
OPEN_V4 = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
    "srchost=0.0.0.0/0"
)
OPEN_V6 = (
    "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 srchost=::/0"
)
LAN_ONLY = (
    "action=forward forwardtype=external proto=tcp srcports=81-81 dstports=8081-8081 "
    "srchost=192.0.2.0/24"
)
RANGE = (
    "action=forward forwardtype=external proto=tcp srcports=82-83 dstports=9082-9083 "
    "srchost=10.137.0.0/16"
)


@pytest.fixture(scope="module")
def forwards(lab: Lab) -> Iterator[AdminClient]:
    """The four forwards of `work` in the session's lab, every hop applied, and servers on
    their target ports; the forwards go when the module ends."""
    client = AdminClient(lab.admin_socket, timeout=60)
    try:
        for rule in (OPEN_V4, OPEN_V6, LAN_ONLY, RANGE):
            client.add_forward("work", rule)
        deadline = time.monotonic() + APPLY_TIMEOUT
        while not all_applied(client):
            assert time.monotonic() < deadline, f"not applied: {client.forwards()}"
            time.sleep(0.05)  # polling interval of a bounded wait
        with (
            peer_echo_server(lab, "work", 8080),
            peer_echo_server(lab, "work", 8081),
            peer_echo_server(lab, "work", 9083),
        ):
            yield client
    finally:
        for forward_id in client.forward_ids("work"):
            client.remove_forward("work", forward_id)


def all_applied(client: AdminClient) -> bool:
    found = client.forwards_of("work")
    return len(found) == 4 and all(
        f.state == ForwardState.ACTIVE and all(h.state == HopState.APPLIED for h in f.hops)
        for f in found
    )


def sys_net(lab: Lab, family: int) -> str:
    address = lab.topology["sys-net"].address4 if family == 4 else lab.topology["sys-net"].address6
    return str(address)


@pytest.mark.parametrize("client_qube", ["personal", "work"])
def test_a_qube_behind_the_edge_reaches_an_open_forward_by_the_edge_lan_address(
    lab: Lab, forwards: AdminClient, client_qube: str
) -> None:
    # The target sees the edge (which masqueraded the hairpinned flow), so replies return
    # through it and are un-NATed.
    edge = lab.addresses.edge_lan4
    assert connect(lab, client_qube, edge, 80) == sys_net(lab, 4)


def test_ipv6_hairpin(lab: Lab, forwards: AdminClient) -> None:
    assert connect(lab, "personal", lab.addresses.edge_lan6, 80) == sys_net(lab, 6)


def test_port_ranges_are_remapped_one_to_one_when_hairpinned(
    lab: Lab, forwards: AdminClient
) -> None:
    assert connect(lab, "personal", lab.addresses.edge_lan4, 83) == sys_net(lab, 4)
    assert connect(lab, "personal", lab.addresses.edge_lan4, 82) is None  # nothing on 9082


def test_a_lan_only_forward_does_not_hairpin(lab: Lab, forwards: AdminClient) -> None:
    lan_client = lab.addresses.lan_clients4[0]
    assert connect(lab, "lan", lab.addresses.edge_lan4, 81, bind=lan_client) == str(lan_client)
    assert connect(lab, "personal", lab.addresses.edge_lan4, 81) is None


def test_hairpin_opens_nothing_else(lab: Lab, forwards: AdminClient) -> None:
    edge = lab.addresses.edge_lan4
    sys_firewall = lab.topology["sys-firewall"].address4
    work = lab.topology["work"].address4
    # A port without a forward, the middle hop's own address (no hairpin there: its eth0
    # address is also its vifs' gateway address), and the target directly.
    assert connect(lab, "personal", edge, 84) is None
    assert connect(lab, "personal", sys_firewall, 80) is None
    assert connect(lab, "personal", work, 8080) is None
    # The LAN keeps reaching the open forward as before.
    lan_client = lab.addresses.lan_clients4[0]
    assert connect(lab, "lan", edge, 80, bind=lan_client) == str(lan_client)


def test_hairpin_follows_a_new_outside_address(lab: Lab, forwards: AdminClient) -> None:
    """DHCP gives the edge a new LAN address: hairpin moves to it without a change in dom0."""
    new = "192.0.2.222"
    lab.run("sys-net", ["ip", "addr", "add", f"{new}/24", "dev", "eth0"], check=True)
    try:
        deadline = time.monotonic() + APPLY_TIMEOUT
        while connect(lab, "personal", new, 80) != sys_net(lab, 4):
            assert time.monotonic() < deadline, "hairpin never reached the new address"
    finally:
        lab.run("sys-net", ["ip", "addr", "del", f"{new}/24", "dev", "eth0"], check=True)
