"""Which tracked flows a removed forward leaves to delete (and which another one keeps)."""

import dataclasses
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.agent.conntrack import (
    Flow,
    FlowTable,
    InForce,
    Removal,
    delete_commands,
    list_filter,
    parse_flows,
    removed_hops,
    sources_to_place,
)
from qubes_portfwd.model.entries import Hop, parse_hop
from qubes_portfwd.model.ports import PortRange

DNAT = parse_hop(
    "/qubes-portfwd/0123456789ab/4",
    "role=dnat family=4 proto=tcp,udp in=eth0 ports=80-81 to=10.137.0.6 toports=8080-8081 "
    "srchost=0.0.0.0/0",
)
ACCEPT = parse_hop(
    "/qubes-portfwd/0123456789ab/6",
    "role=accept family=6 proto=tcp ports=8080-8080 srchost=::/0",
)
WIDE = parse_hop(
    "/qubes-portfwd/0123456789ab/4",
    "role=dnat family=4 proto=tcp in=eth0 ports=20000-29999 to=10.137.0.3 toports=30000-39999 "
    "srchost=0.0.0.0/0",
)
OWN4 = ipaddress.ip_address("10.137.0.6")
OWN6 = ipaddress.ip_address("fd09:24ef:4179::a89:6")
TO = ipaddress.ip_address("10.137.0.3")
TCP4 = ["-f", "ipv4", "-p", "tcp"]
LAN = ipaddress.ip_address("192.0.2.10")


def reply_port(port: str) -> list[str]:
    return ["--reply-port-src", port]


LISTING = """\
tcp      6 431999 ESTABLISHED src=192.0.2.10 dst=192.0.2.2 sport=40000 dport=25000 \
src=10.137.0.3 dst=192.0.2.10 sport=35000 dport=40000 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=192.0.2.11 dst=192.0.2.2 sport=40001 dport=25000 \
src=10.137.0.3 dst=192.0.2.11 sport=35000 dport=40001 [ASSURED] mark=0 use=1
tcp      6 119 TIME_WAIT src=192.0.2.10 dst=192.0.2.2 sport=40002 dport=29999 \
src=10.137.0.3 dst=192.0.2.10 sport=39999 dport=40002 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.137.0.3 dst=198.51.100.80 sport=50000 dport=443 \
src=198.51.100.80 dst=192.0.2.2 sport=443 dport=50000 [ASSURED] mark=0 use=1
udp      17 29 src=192.0.2.10 dst=192.0.2.2 sport=5353 dport=25001 [UNREPLIED] \
src=10.137.0.3 dst=192.0.2.10 sport=12345 dport=5353 mark=0 use=1
icmp     1 29 src=192.0.2.10 dst=192.0.2.2 type=8 code=0 id=7 src=192.0.2.2 dst=192.0.2.10
"""


def test_removed_and_changed_hops_are_forgotten_kept_ones_not() -> None:
    changed = parse_hop(
        "/qubes-portfwd/0123456789ab/4",
        "role=dnat family=4 proto=tcp in=eth0 ports=80-81 to=10.137.0.6 toports=8080-8081 "
        "srchost=0.0.0.0/0",
    )
    assert removed_hops([DNAT, ACCEPT], [ACCEPT]) == Removal((DNAT,), (ACCEPT,))
    assert removed_hops([DNAT, ACCEPT], [changed, ACCEPT]) == Removal((DNAT,), (changed, ACCEPT))
    assert removed_hops([DNAT], [DNAT]).hops == ()


def test_a_hop_equal_to_one_kept_is_not_removed_whatever_object_it_is() -> None:
    again = dataclasses.replace(DNAT)
    assert again == DNAT and again is not DNAT
    assert removed_hops([DNAT, ACCEPT], [again, ACCEPT]) == Removal((), (again, ACCEPT))
    assert removed_hops([DNAT, dataclasses.replace(DNAT)], [ACCEPT]).hops == (DNAT,)


@given(
    st.lists(st.integers(0, 5), max_size=6),
    st.lists(st.integers(0, 5), max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_removed_hops_are_those_equal_to_none_kept(
    before: list[int], after: list[int], copied: list[bool]
) -> None:
    pool = [DNAT, ACCEPT, *(dataclasses.replace(DNAT, forward_id=f"{n:012x}") for n in range(2))]
    pool += [dataclasses.replace(DNAT, protos=("udp",)), dataclasses.replace(ACCEPT, family=6)]
    kept = [dataclasses.replace(pool[n]) if copied[n] else pool[n] for n in after]
    removal = removed_hops([pool[n] for n in before], kept)
    expected = {pool[n] for n in before} - set(kept)
    assert set(removal.hops) == expected and len(removal.hops) == len(expected)
    assert list(removal.hops) == sorted(removal.hops, key=lambda h: (h.forward_id, h.family))
    assert removal.kept == tuple(kept)


def test_the_listing_is_read_as_original_and_reply_tuples() -> None:
    flows = parse_flows(LISTING)
    assert flows[0] == Flow(
        ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("192.0.2.2"), 25000, TO, 35000
    )
    assert len(flows) == 5  # the icmp line has no ports: no flow of a forward


def test_a_wide_range_deletes_only_the_ports_that_have_flows_each_once() -> None:
    commands = delete_commands(WIDE, "tcp", parse_flows(LISTING), [])
    assert commands == [
        [*TCP4, "--orig-port-dst", "25000", "--reply-src", "10.137.0.3", *reply_port("35000")],
        [*TCP4, "--orig-port-dst", "29999", "--reply-src", "10.137.0.3", *reply_port("39999")],
    ]


def test_a_dnat_hop_lists_by_its_next_hop_and_skips_flows_it_did_not_rewrite() -> None:
    assert list_filter(DNAT, "udp", []) == ["-f", "ipv4", "-p", "udp", "--reply-src", "10.137.0.6"]
    unmapped = [Flow(LAN, ipaddress.ip_address("192.0.2.2"), 80, OWN4, 9999)]
    other_target = [Flow(LAN, ipaddress.ip_address("192.0.2.2"), 80, TO, 8080)]
    assert delete_commands(DNAT, "tcp", unmapped + other_target, []) == []
    mapped = [Flow(LAN, ipaddress.ip_address("192.0.2.2"), 81, OWN4, 8081)]
    assert delete_commands(DNAT, "udp", mapped, []) == [
        [
            "-f",
            "ipv4",
            "-p",
            "udp",
            "--orig-port-dst",
            "81",
            "--reply-src",
            "10.137.0.6",
            "--reply-port-src",
            "8081",
        ]
    ]


def test_an_accept_hop_needs_the_qubes_own_address() -> None:
    peer = ipaddress.ip_address("2001:db8::10")
    flows = [Flow(peer, OWN6, 8080, peer, 8080)]
    assert list_filter(ACCEPT, "tcp", [OWN4, OWN6]) == [
        "-f",
        "ipv6",
        "-p",
        "tcp",
        "--orig-dst",
        str(OWN6),
    ]
    assert delete_commands(ACCEPT, "tcp", flows, [OWN6]) == [
        ["-f", "ipv6", "-p", "tcp", "--orig-dst", str(OWN6), "--orig-port-dst", "8080"]
    ]
    assert list_filter(ACCEPT, "tcp", [OWN4]) is None
    assert delete_commands(ACCEPT, "tcp", flows, [OWN4]) == []


# Two forwards to work's tcp/8080 (10.137.0.6): one from the LAN, one from personal.
PERSONAL = ipaddress.ip_address("10.137.0.7")
OTHER_LAN = ipaddress.ip_address("192.0.2.11")
SYS_FIREWALL = ipaddress.ip_address("10.137.0.3")


def hop(forward_id: str, value: str) -> Hop:
    return parse_hop(f"/qubes-portfwd/{forward_id}/4", value)


def accept_8080(forward_id: str, srchost: str) -> Hop:
    return hop(forward_id, f"role=accept family=4 proto=tcp ports=8080-8080 srchost={srchost}")


def dnat_to_work(forward_id: str, inbound: str, port: int, srchost: str) -> Hop:
    return hop(
        forward_id,
        f"role=dnat family=4 proto=tcp in={inbound} ports={port}-{port} to=10.137.0.6 "
        f"toports=8080-8080 srchost={srchost}",
    )


def at_work(source: ipaddress.IPv4Address, sport: int = 8080) -> Flow:
    return Flow(source, OWN4, 8080, source, sport)


def through_netvm(source: ipaddress.IPv4Address, port: int) -> Flow:
    return Flow(source, SYS_FIREWALL, port, OWN4, 8080)


def test_at_the_target_a_port_shared_with_a_forward_in_force_loses_only_the_removed_ones() -> None:
    lan = accept_8080("aaaaaaaaaaaa", "192.0.2.0/24")
    internal = accept_8080("bbbbbbbbbbbb", "10.137.0.7/32")
    flows = [at_work(LAN), at_work(OTHER_LAN), at_work(PERSONAL)]
    # The LAN forward goes: its two clients' flows by source (the port stays open to
    # personal, whose flow a per-port delete would cut).
    assert delete_commands(lan, "tcp", flows, [OWN4], InForce([internal])) == [
        [*TCP4, "--orig-src", "192.0.2.10", "--orig-dst", "10.137.0.6", "--orig-port-dst", "8080"],
        [*TCP4, "--orig-src", "192.0.2.11", "--orig-dst", "10.137.0.6", "--orig-port-dst", "8080"],
    ]
    assert delete_commands(internal, "tcp", flows, [OWN4], InForce([lan])) == [
        [*TCP4, "--orig-src", "10.137.0.7", "--orig-dst", "10.137.0.6", "--orig-port-dst", "8080"]
    ]
    # Alone on its port, a forward's flows go by one command per port, as before.
    assert delete_commands(internal, "tcp", flows, [OWN4], InForce([])) == [
        [*TCP4, "--orig-dst", "10.137.0.6", "--orig-port-dst", "8080"]
    ]


def test_at_the_target_a_source_another_forward_admits_keeps_its_flow() -> None:
    anyone = accept_8080("aaaaaaaaaaaa", "0.0.0.0/0")
    internal = accept_8080("bbbbbbbbbbbb", "10.137.0.7/32")
    flows = [at_work(LAN), at_work(PERSONAL)]
    assert delete_commands(internal, "tcp", flows, [OWN4], InForce([anyone])) == []
    assert delete_commands(anyone, "tcp", flows, [OWN4], InForce([internal])) == [
        [*TCP4, "--orig-src", "192.0.2.10", "--orig-dst", "10.137.0.6", "--orig-port-dst", "8080"]
    ]


def test_two_outside_ports_to_one_target_port_are_cut_by_their_own_outside_port() -> None:
    first = dnat_to_work("aaaaaaaaaaaa", "eth0", 80, "0.0.0.0/0")
    second = dnat_to_work("bbbbbbbbbbbb", "eth0", 81, "0.0.0.0/0")
    flows = [through_netvm(LAN, 80), through_netvm(LAN, 81)]
    match = ["--reply-src", "10.137.0.6", *reply_port("8080")]
    assert delete_commands(first, "tcp", flows, [], InForce([second])) == [
        [*TCP4, "--orig-port-dst", "80", *match]
    ]
    assert delete_commands(second, "tcp", flows, [], InForce([first])) == [
        [*TCP4, "--orig-port-dst", "81", *match]
    ]


def test_a_netvm_port_shared_by_both_sides_is_decided_by_where_the_source_lives() -> None:
    external = dnat_to_work("aaaaaaaaaaaa", "eth0", 8080, "0.0.0.0/0")
    internal = dnat_to_work("bbbbbbbbbbbb", "downstream", 8080, "10.137.0.7/32")
    flows = [through_netvm(LAN, 8080), through_netvm(PERSONAL, 8080)]
    sides = {PERSONAL: "downstream", LAN: "eth0"}
    match = ["--orig-port-dst", "8080", "--reply-src", "10.137.0.6", *reply_port("8080")]
    # The external forward admits personal's address too, but personal's flow came from
    # downstream: only a route lookup tells, and only for such a source.
    assert sources_to_place(internal, "tcp", flows, InForce([external]), None) == {PERSONAL}
    assert delete_commands(internal, "tcp", flows, [], InForce([external]), sides) == [
        [*TCP4, "--orig-src", "10.137.0.7", *match]
    ]
    # Where the source lives is unknown: the flow goes (the safe side).
    assert delete_commands(internal, "tcp", flows, [], InForce([external]), {}) == [
        [*TCP4, "--orig-src", "10.137.0.7", *match]
    ]
    assert sources_to_place(external, "tcp", flows, InForce([internal]), None) == {PERSONAL}
    assert delete_commands(external, "tcp", flows, [], InForce([internal]), sides) == [
        [*TCP4, "--orig-src", "192.0.2.10", *match]
    ]


def test_a_hop_changed_to_fewer_sources_keeps_the_flows_it_still_admits() -> None:
    before = dnat_to_work("aaaaaaaaaaaa", "eth0", 80, "192.0.2.0/24")
    after = dnat_to_work("aaaaaaaaaaaa", "eth0", 80, "192.0.2.10/32")
    flows = [through_netvm(LAN, 80), through_netvm(OTHER_LAN, 80)]
    removal = removed_hops([before], [after])
    assert removal.hops == (before,)
    match = ["--orig-port-dst", "80", "--reply-src", "10.137.0.6", *reply_port("8080")]
    assert delete_commands(before, "tcp", flows, [], InForce(removal.kept)) == [
        [*TCP4, "--orig-src", "192.0.2.11", *match]
    ]


def test_in_force_finds_the_hops_covering_a_port_among_many() -> None:
    hops = [dnat_to_work(f"{n:012x}", "eth0", 1000 + n, "0.0.0.0/0") for n in range(2000)]
    wide = hop(
        "ffffffffffff",
        "role=dnat family=4 proto=tcp in=downstream ports=1000-1999 to=10.137.0.6 "
        "toports=8000-8999 srchost=10.137.0.7",
    )
    in_force = InForce([*hops, wide])
    probe = hops[0]
    assert in_force.at(probe, "tcp", 1500) == [hops[500], wide]
    assert in_force.at(probe, "tcp", 2500) == [hops[1500]]
    assert in_force.at(probe, "udp", 1500) == []
    assert in_force.at(accept_8080("aaaaaaaaaaaa", "0.0.0.0/0"), "tcp", 1500) == []


def test_a_listing_is_looked_up_by_the_hops_ports() -> None:
    flows = [through_netvm(LAN, port) for port in (81, 80, 443, 80, 8080)]
    table = FlowTable(flows)
    assert [f.orig_dport for f in table.on(PortRange(80, 81))] == [80, 80, 81]
    assert table.on(PortRange(82, 442)) == []
    assert [f.orig_dport for f in table.on(PortRange(443, 65535))] == [443, 8080]
