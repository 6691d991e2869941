"""Which tracked flows a removed forward leaves to delete."""

import ipaddress

from qubes_portfwd.agent.conntrack import (
    Flow,
    delete_commands,
    list_filter,
    parse_flows,
    removed_hops,
)
from qubes_portfwd.model.entries import parse_hop

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
    assert removed_hops([DNAT, ACCEPT], [ACCEPT]) == [DNAT]
    assert removed_hops([DNAT, ACCEPT], [changed, ACCEPT]) == [DNAT]
    assert removed_hops([DNAT], [DNAT]) == []


def test_the_listing_is_read_as_original_and_reply_tuples() -> None:
    flows = parse_flows(LISTING)
    assert flows[0] == Flow(ipaddress.ip_address("192.0.2.2"), 25000, TO, 35000)
    assert len(flows) == 5  # the icmp line has no ports: no flow of a forward


def test_a_wide_range_deletes_only_the_ports_that_have_flows_each_once() -> None:
    commands = delete_commands(WIDE, "tcp", parse_flows(LISTING), [])
    assert commands == [
        [*TCP4, "--orig-port-dst", "25000", "--reply-src", "10.137.0.3", *reply_port("35000")],
        [*TCP4, "--orig-port-dst", "29999", "--reply-src", "10.137.0.3", *reply_port("39999")],
    ]


def test_a_dnat_hop_lists_by_its_next_hop_and_skips_flows_it_did_not_rewrite() -> None:
    assert list_filter(DNAT, "udp", []) == ["-f", "ipv4", "-p", "udp", "--reply-src", "10.137.0.6"]
    unmapped = [Flow(ipaddress.ip_address("192.0.2.2"), 80, OWN4, 9999)]
    other_target = [Flow(ipaddress.ip_address("192.0.2.2"), 80, TO, 8080)]
    assert delete_commands(DNAT, "tcp", unmapped + other_target, []) == []
    mapped = [Flow(ipaddress.ip_address("192.0.2.2"), 81, OWN4, 8081)]
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
    flows = [Flow(OWN6, 8080, ipaddress.ip_address("2001:db8::10"), 8080)]
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
