"""The agents in a whole lab: rules planned, published, applied, and real packets through.

Each test publishes its own rule lists (replacing every forward entry and, as core-admin
would, every qube's outbound firewall entries for Qubes' worker), so the
tests do not depend on each other's leftovers; the lab is shared by the module.
"""

import time
from collections.abc import Callable, Iterator

import pytest
from test_agent_support import (
    ECHO_CLIENT,
    ECHO_SERVER,
    connect,
    dns_answers,
    handled_counts,
    ping,
    publish,
    publish_entries,
    read_line,
    running,
    server,
    wait_worker_handled,
)

from qubes_lab.builder import Lab
from qubes_lab.qube_db import FileQubeDb

pytestmark = pytest.mark.lab

FIREWALL_QUBE = "sys-firewall"
SYS_FIREWALL4 = "10.137.0.3"
DNS4 = "10.139.1.1"


@pytest.fixture(scope="module")
def lab(private_lab: Lab) -> Lab:
    # These tests write the entries themselves (as the planner would have them); the admin
    # service would reconcile them back to its own firewall.xml files.
    private_lab.stop_admin()
    return private_lab


@pytest.fixture(autouse=True)
def no_rules_after(lab: Lab) -> Iterator[None]:
    yield
    publish(lab, {})


def external(proto: str, srcports: str, dstports: str, srchost: str) -> str:
    return (
        f"action=forward forwardtype=external proto={proto} srcports={srcports} "
        f"dstports={dstports} srchost={srchost}"
    )


def internal(proto: str, srcports: str, dstports: str, srchost: str) -> str:
    return external(proto, srcports, dstports, srchost).replace("=external", "=internal")


def test_external_tcp_forward_reaches_work_with_the_clients_address(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients4[0]
    with server(lab, "work", "tcp", 8080):
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, client) is None
        publish(
            lab,
            {"work": [external("tcp", "80", "8080", "0.0.0.0/0")]},
        )
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, client) == str(client)
        publish(lab, {})
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, client) is None


def test_udp_forward(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients4[0]
    publish(
        lab,
        {"work": [external("udp", "9100", "9100", "192.0.2.0/24")]},
    )
    with server(lab, "work", "udp", 9100):
        assert connect(lab, "lan", "udp", outside.edge_lan4, 9100, client) == str(client)


def test_port_range_with_remapping(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients4[0]
    publish(
        lab,
        {"work": [external("tcp", "9000-9002", "7000-7002", "0.0.0.0/0")]},
    )
    with server(lab, "work", "tcp", 7001):
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 9001, client) == str(client)
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 9003, client) is None


def test_ipv6_forward(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients6[0]
    publish(
        lab,
        {"work": [external("tcp", "80", "8080", "::/0")]},
    )
    with server(lab, "work", "tcp", 8080, family=6):
        assert connect(lab, "lan", "tcp", outside.edge_lan6, 80, client) == str(client)


def test_internal_forward_only_for_the_named_qube(lab: Lab) -> None:
    with server(lab, "work", "tcp", 8080):
        assert connect(lab, "personal", "tcp", SYS_FIREWALL4, 8443) is None
        publish(
            lab,
            {"work": [internal("tcp", "8443", "8080", "personal")]},
        )
        personal4 = "10.137.0.7"
        assert connect(lab, "personal", "tcp", SYS_FIREWALL4, 8443) == personal4
        assert connect(lab, "sys-vpn", "tcp", SYS_FIREWALL4, 8443) is None


def test_srchost_restricts_an_external_forward(lab: Lab) -> None:
    outside = lab.addresses
    allowed, other = outside.lan_clients4[:2]
    publish(
        lab,
        {"work": [external("tcp", "80", "8080", f"{allowed}/32")]},
    )
    with server(lab, "work", "tcp", 8080):
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, allowed) == str(allowed)
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, other) is None


def test_outbound_firewall_allows_and_blocks_exactly_what_it_says(lab: Lab) -> None:
    outside = lab.addresses
    target = outside.server4
    name = outside.server_name
    with (
        server(lab, "server", "tcp", 8001),
        server(lab, "server", "tcp", 8002),
        server(lab, "server", "tcp", 8003),
    ):
        publish(
            lab,
            {
                "work": [
                    f"action=accept dsthost={name} proto=tcp dstports=8001",
                    f"action=accept dst4={target}/32 proto=tcp dstports=8002",
                    "action=accept proto=icmp",
                    "action=accept specialtarget=dns",
                    "action=drop",
                ]
            },
        )
        reached = {port: connect(lab, "work", "tcp", target, port) for port in (8001, 8002, 8003)}
        assert reached[8001] is not None
        assert reached[8002] is not None
        assert reached[8003] is None
        assert ping(lab, "work", target)
        assert dns_answers(lab, "work", DNS4, name)
        assert connect(lab, "personal", "tcp", target, 8003) is not None

        publish(
            lab,
            {"work": [f"action=accept dsthost={name} proto=tcp dstports=8003", "action=drop"]},
        )
        assert connect(lab, "work", "tcp", target, 8001) is None
        assert connect(lab, "work", "tcp", target, 8003) is not None
        assert not ping(lab, "work", target)
        assert not dns_answers(lab, "work", DNS4, name)
        assert connect(lab, "personal", "tcp", target, 8001) is not None


def test_a_forward_behind_the_vpn_is_reached_through_the_provider_only(lab: Lab) -> None:
    outside = lab.addresses
    result = publish(
        lab,
        {"vpn-work": [external("tcp", "8088", "8080", "0.0.0.0/0")]},
    )
    assert not any(k.startswith("/qubes-portfwd/") for k in result.entries["sys-net"])
    assert not any(k.startswith("/qubes-portfwd/") for k in result.entries["sys-firewall"])
    with server(lab, "vpn-work", "tcp", 8080):
        tunnel = outside.tunnel_address("sys-vpn")
        assert connect(lab, "provider", "tcp", tunnel, 8088) is not None
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 8088, outside.lan_clients4[0]) is None


def test_a_broken_forward_entry_opens_nothing_and_is_reported(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients4[0]
    planned = publish(
        lab,
        {"work": [external("tcp", "80", "8080", "0.0.0.0/0")]},
    )
    with server(lab, "work", "tcp", 8080):
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, client) == str(client)
        entries = {qube: dict(values) for qube, values in planned.entries.items()}
        (key,) = [k for k in entries["sys-net"] if k.startswith("/qubes-portfwd/")]
        entries["sys-net"][key] = entries["sys-net"][key].replace("srchost=", "srchost=nope,")
        statuses = publish_entries(lab, entries)
        assert statuses["sys-net"].per_key[key].startswith("srchost:")
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, client) is None


def test_a_broken_firewall_entry_blocks_that_qube_and_is_the_workers_alone(lab: Lab) -> None:
    # Qubes' worker fails closed on a bad entry; our agent neither reads nor reports it.
    outside = lab.addresses
    publish(lab, {"work": ["action=accept"]})
    with server(lab, "server", "tcp", 8001):
        assert connect(lab, "work", "tcp", outside.server4, 8001) is not None
        db = FileQubeDb(lab.store(FIREWALL_QUBE).path)
        before = handled_counts(lab, FIREWALL_QUBE)
        db.write("/qubes-firewall/10.137.0.6/0000", b"action=accept proto=tcp dstports=99999")
        db.write("/qubes-firewall/10.137.0.6", b"")
        wait_worker_handled(lab, FIREWALL_QUBE, before, ["/qubes-firewall-handled/10.137.0.6"])
        assert connect(lab, "work", "tcp", outside.server4, 8001) is None
        assert connect(lab, "personal", "tcp", outside.server4, 8001) is not None
        report = lab.store(FIREWALL_QUBE).read_status()
        assert report.error is None
        assert not any(k.startswith("/qubes-firewall/") for k in report.per_key)


def test_removing_a_forward_ends_its_open_connections(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients4[0]
    publish(lab, {"work": [external("tcp", "80", "8080", "0.0.0.0/0")]})
    with running(lab, "work", ECHO_SERVER, 8080) as echo:
        assert read_line(echo) == "ready"
        with running(lab, "lan", ECHO_CLIENT, outside.edge_lan4, 80, client) as session:
            assert session.stdin is not None
            session.stdin.write("one\n")
            session.stdin.flush()
            assert read_line(session) == "one"
            publish(lab, {})
            session.stdin.write("two\n")
            session.stdin.flush()
            assert read_line(session).startswith("FAIL")


def test_rules_flushed_by_hand_or_a_restarted_agent_come_back(lab: Lab) -> None:
    outside = lab.addresses
    client = outside.lan_clients4[0]
    publish(lab, {"work": [external("tcp", "80", "8080", "0.0.0.0/0")]})
    with server(lab, "work", "tcp", 8080):
        lab.run("sys-net", ["nft", "flush", "chain", "ip", "qubes", "custom-forward"], check=True)
        lab.run("sys-firewall", ["nft", "delete", "table", "ip", "qubes-portfwd"], check=True)
        assert reached_within(lambda: connect(lab, "lan", "tcp", outside.edge_lan4, 80, client))
        lab.stop_agent("work")
        lab.run("work", ["nft", "flush", "chain", "ip", "qubes", "custom-input"], check=True)
        assert connect(lab, "lan", "tcp", outside.edge_lan4, 80, client) is None
        lab.start_agent("work")
        assert reached_within(lambda: connect(lab, "lan", "tcp", outside.edge_lan4, 80, client))


def reached_within(attempt: Callable[[], str | None], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if attempt() is not None:
            return True
    return False
