"""Real packets: several forwards to one port of one qube, each open only to its own sources.

    client (A, B) -- eth0 [netvm 192.0.2.1] vif5.0 -- [target 10.137.0.5, serves 8080]
                                            vif6.0 -- [personal 10.137.0.6]

The target's server answers with the peer address it sees, so each test tells which
forward carried a connection (a hairpinned one arrives masqueraded as the netvm).
"""

import ipaddress
import subprocess
from collections.abc import Callable, Iterator

import pytest

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.model.entries import Hop
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps

from .helpers import accept, dnat, firewall, worker_tables
from .lab import nft, run, wait_until

pytestmark = pytest.mark.lab

A, B = "192.0.2.2", "192.0.2.3"
OUTSIDE, GATEWAY = "192.0.2.1", "10.137.0.1"
TARGET, PERSONAL = "10.137.0.5", "10.137.0.6"
TARGET_PORT = 8080
# Qubes' worker judges an internal forward by the connecting qube's own outbound rules, after
# the DNAT: personal may reach the target's port and nothing else.
PERSONAL_REACHES_TARGET = ("drop", f"action=accept proto=tcp dst4={TARGET}/32 dstports=8080-8080")


def apply(ns: str, rules: QubeRules) -> None:
    compiled = compile_qube(rules, parse_owned_jumps(nft(ns, "-j", "list", "ruleset")))
    assert not compiled.skipped, compiled.skipped
    nft(ns, "-f", "-", stdin=compiled.script)  # fails the test on any nft error


def link(left: str, left_if: str, right: str, right_if: str) -> None:
    run(
        left, "ip", "link", "add", left_if, "type", "veth", "peer", "name", right_if, "netns", right
    )


def downstream_qube(netvm: str, vif: str, qube: str, address: str) -> None:
    link(netvm, vif, qube, "eth0")
    run(netvm, "ip", "addr", "add", f"{GATEWAY}/32", "dev", vif)
    run(netvm, "ip", "link", "set", vif, "group", "2", "up")
    run(netvm, "ip", "route", "add", f"{address}/32", "dev", vif)
    run(qube, "ip", "addr", "add", f"{address}/32", "dev", "eth0")
    run(qube, "ip", "link", "set", "eth0", "up")
    run(qube, "ip", "route", "add", f"{GATEWAY}/32", "dev", "eth0")
    run(qube, "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0", "onlink")
    nft(qube, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=False)))


@pytest.fixture
def hosts(make_netns: Callable[[], str]) -> Iterator[dict[str, str]]:
    client, netvm, target, personal = make_netns(), make_netns(), make_netns(), make_netns()
    link(client, "c0", netvm, "eth0")
    for address in (A, B):
        run(client, "ip", "addr", "add", f"{address}/24", "dev", "c0")
    run(client, "ip", "link", "set", "c0", "up")
    run(netvm, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", "eth0")
    run(netvm, "ip", "link", "set", "eth0", "group", "1", "up")
    run(netvm, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    run(netvm, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0")
    downstream_qube(netvm, "vif5.0", target, TARGET)
    downstream_qube(netvm, "vif6.0", personal, PERSONAL)
    vifs = (
        Downstream("vif5.0", ipaddress.IPv4Address(TARGET)),
        Downstream("vif6.0", ipaddress.IPv4Address(PERSONAL)),
    )
    nft(netvm, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, downstream=vifs)))
    server = subprocess.Popen(
        [
            "ip", "netns", "exec", target, "socat",
            f"TCP-LISTEN:{TARGET_PORT},reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: f":{TARGET_PORT} " in run(target, "ss", "-Hltn"), "the target's server")
        yield {"client": client, "netvm": netvm, "target": target, "personal": personal}
    finally:
        server.terminate()
        server.wait(timeout=10)


def reached(host: str, address: str, port: int, source: str = "") -> str | None:
    """The peer address the target saw, or None when the connection did not get through."""
    bind = f",bind={source}" if source else ""
    done = subprocess.run(
        [
            "ip", "netns", "exec", host, "socat", "-T", "2", "-u",
            f"TCP4:{address}:{port},connect-timeout=2{bind}", "STDOUT",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip
    return done.stdout.strip() or None


def setup(
    hosts: dict[str, str],
    hops: tuple[Hop, ...],
    accepts: tuple[Hop, ...],
    personal_policy: tuple[str, ...] = PERSONAL_REACHES_TARGET,
    hairpin: bool = False,
) -> None:
    """The netvm's hops, Qubes' worker's tables (outbound: the target may send nothing new)
    and the target's accepts."""
    ip = ipaddress.ip_address
    interfaces = {"eth0": (ip(OUTSIDE),), "vif5.0": (ip(GATEWAY),), "vif6.0": (ip(GATEWAY),)}
    netvm = QubeRules(
        hops=hops,
        interface_addresses=interfaces if hairpin else {},
    )
    apply(hosts["netvm"], netvm)
    worker = worker_tables(firewall(TARGET, "drop"), firewall(PERSONAL, *personal_policy))
    nft(hosts["netvm"], "-f", "-", stdin=worker)
    apply(hosts["target"], QubeRules(hops=accepts))


def to_target(forward_id: str, inbound: str, port: int, srchost: str) -> Hop:
    return dnat(
        forward_id,
        inbound=inbound,
        ports=f"{port}-{port}",
        toports=f"{TARGET_PORT}-{TARGET_PORT}",
        to=TARGET,
        srchost=srchost,
    )


def opens(forward_id: str, srchost: str) -> Hop:
    return accept(forward_id, ports=f"{TARGET_PORT}-{TARGET_PORT}", srchost=srchost)


def test_two_outside_ports_and_an_internal_one_to_one_port_each_admit_their_own(
    hosts: dict[str, str],
) -> None:
    setup(
        hosts,
        (
            to_target("aaaaaaaaaaaa", "eth0", 80, f"{A}/32"),
            to_target("bbbbbbbbbbbb", "eth0", 81, f"{B}/32"),
            to_target("cccccccccccc", "downstream", 80, f"{PERSONAL}/32"),
        ),
        (
            opens("aaaaaaaaaaaa", f"{A}/32"),
            opens("bbbbbbbbbbbb", f"{B}/32"),
            opens("cccccccccccc", f"{PERSONAL}/32"),
        ),
    )
    client, personal = hosts["client"], hosts["personal"]
    assert reached(client, OUTSIDE, 80, A) == A
    assert reached(client, OUTSIDE, 81, B) == B
    assert reached(personal, GATEWAY, 80) == PERSONAL
    # No source leaks to the other forward's port, whatever the shared target port.
    assert reached(client, OUTSIDE, 81, A) is None
    assert reached(client, OUTSIDE, 80, B) is None
    assert reached(personal, GATEWAY, 81) is None
    assert reached(client, TARGET, TARGET_PORT, A) is None  # nor to the target directly


def test_overlapping_sources_on_a_shared_target_port_load_as_a_union(
    hosts: dict[str, str],
) -> None:
    # One forward from everywhere, one from a network inside it, one from a host inside
    # that: the target's accepts and the netvm's forward set overlap in every shape.
    setup(
        hosts,
        (
            to_target("aaaaaaaaaaaa", "eth0", 80, "0.0.0.0/0"),
            to_target("bbbbbbbbbbbb", "eth0", 81, "192.0.2.0/24"),
            to_target("cccccccccccc", "eth0", 82, f"{B}/32"),
            to_target("dddddddddddd", "downstream", 80, f"{PERSONAL}/32"),
        ),
        (
            opens("aaaaaaaaaaaa", "0.0.0.0/0"),
            opens("bbbbbbbbbbbb", "192.0.2.0/24"),
            opens("cccccccccccc", f"{B}/32"),
            opens("dddddddddddd", f"{PERSONAL}/32"),
        ),
    )
    client = hosts["client"]
    assert {port: reached(client, OUTSIDE, port, A) for port in (80, 81, 82)} == {
        80: A,
        81: A,
        82: None,
    }
    assert reached(client, OUTSIDE, 82, B) == B
    assert reached(hosts["personal"], GATEWAY, 80) == PERSONAL


def test_the_outside_address_from_downstream_meets_the_hairpin_before_an_internal_forward(
    hosts: dict[str, str],
) -> None:
    # The edge's external forward on 80 hairpins; an internal forward of the same netvm
    # listens on 80 of its downstream side. Both lead to the target's 8080.
    external = to_target("aaaaaaaaaaaa", "eth0", 80, "0.0.0.0/0")
    internal = to_target("bbbbbbbbbbbb", "downstream", 80, f"{PERSONAL}/32")
    accepts = (opens("aaaaaaaaaaaa", "0.0.0.0/0"), opens("bbbbbbbbbbbb", f"{PERSONAL}/32"))
    setup(hosts, (external, internal), accepts, personal_policy=("accept",), hairpin=True)
    personal = hosts["personal"]
    assert reached(hosts["client"], OUTSIDE, 80, A) == A
    # To the outside address: the external forward, hairpinned (masqueraded as the netvm).
    assert reached(personal, OUTSIDE, 80) == GATEWAY
    # To its gateway: the internal forward, personal's own address kept.
    assert reached(personal, GATEWAY, 80) == PERSONAL
    # An external forward that does not admit personal leaves it to the internal one,
    # whose own source check decides: nothing opens beyond what that forward grants.
    lan_only = to_target("aaaaaaaaaaaa", "eth0", 80, "192.0.2.0/24")
    setup(hosts, (lan_only, internal), accepts, personal_policy=("accept",), hairpin=True)
    assert reached(personal, OUTSIDE, 80) == PERSONAL
    assert reached(hosts["client"], OUTSIDE, 80, A) == A
