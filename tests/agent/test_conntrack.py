"""Which tracked flows a removed forward leaves to delete."""

import ipaddress

from qubes_portfwd.agent.conntrack import MAX_PORTS_PER_HOP, forget_commands, removed_hops
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
OWN6 = ipaddress.ip_address("fd09:24ef:4179::a89:6")


def test_removed_and_changed_hops_are_forgotten_kept_ones_not() -> None:
    changed = parse_hop(
        "/qubes-portfwd/0123456789ab/4",
        "role=dnat family=4 proto=tcp in=eth0 ports=80-81 to=10.137.0.6 toports=8080-8081 "
        "srchost=0.0.0.0/0",
    )
    assert removed_hops([DNAT, ACCEPT], [ACCEPT]) == [DNAT]
    assert removed_hops([DNAT, ACCEPT], [changed, ACCEPT]) == [DNAT]
    assert removed_hops([DNAT], [DNAT]) == []


def test_a_dnat_hop_forgets_only_the_flows_it_rewrote_port_by_port() -> None:
    commands, left = forget_commands([DNAT], [])
    assert left == []
    assert [
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
    ] in commands
    assert len(commands) == 4


def test_an_accept_hop_needs_the_qubes_own_address() -> None:
    commands, _ = forget_commands([ACCEPT], [OWN6])
    assert commands == [
        ["-f", "ipv6", "-p", "tcp", "--orig-port-dst", "8080", "--orig-dst", str(OWN6)]
    ]
    commands, left = forget_commands([ACCEPT], [ipaddress.ip_address("10.137.0.6")])
    assert commands == [] and left


def test_wide_ranges_are_left_to_time_out() -> None:
    wide = parse_hop(
        "/qubes-portfwd/0123456789ab/4",
        f"role=accept family=4 proto=tcp ports=1000-{1000 + MAX_PORTS_PER_HOP} srchost=0.0.0.0/0",
    )
    commands, left = forget_commands([wide], [ipaddress.ip_address("10.137.0.6")])
    assert commands == [] and len(left) == 1
