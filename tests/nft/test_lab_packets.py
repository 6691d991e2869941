"""Real packets: LAN client -> network qube (base rules + compiled DNAT) -> target qube."""

import ipaddress
import subprocess
from collections.abc import Callable, Iterator

import pytest

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps

from .helpers import accept, dnat, firewall, worker_tables
from .lab import nft, run, wait_until

pytestmark = pytest.mark.lab

ALLOWED, OUTSIDER = "192.0.2.2", "192.0.2.3"


def apply(ns: str, rules: QubeRules) -> None:
    compiled = compile_qube(rules, parse_owned_jumps(nft(ns, "-j", "list", "ruleset")))
    nft(ns, "-f", "-", stdin=compiled.script)


def veth(left: str, left_if: str, right: str, right_if: str) -> None:
    run(
        left, "ip", "link", "add", left_if, "type", "veth", "peer", "name", right_if, "netns", right
    )


@pytest.fixture
def path(make_netns: Callable[[], str]) -> Iterator[dict[str, str]]:
    """client (two addresses) -- eth0 [netvm] vif5.0 -- eth0 [target 10.137.0.5]."""
    client, netvm, target = make_netns(), make_netns(), make_netns()
    veth(client, "c0", netvm, "eth0")
    veth(netvm, "vif5.0", target, "eth0")
    run(client, "ip", "addr", "add", f"{ALLOWED}/24", "dev", "c0")
    run(client, "ip", "addr", "add", f"{OUTSIDER}/24", "dev", "c0")
    run(client, "ip", "link", "set", "c0", "up")
    run(netvm, "ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
    run(netvm, "ip", "link", "set", "eth0", "group", "1", "up")
    run(netvm, "ip", "addr", "add", "10.137.0.1/32", "dev", "vif5.0")
    run(netvm, "ip", "link", "set", "vif5.0", "group", "2", "up")
    run(netvm, "ip", "route", "add", "10.137.0.5/32", "dev", "vif5.0")
    run(netvm, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    run(target, "ip", "addr", "add", "10.137.0.5/32", "dev", "eth0")
    run(target, "ip", "link", "set", "eth0", "up")
    run(target, "ip", "route", "add", "10.137.0.1/32", "dev", "eth0")
    run(target, "ip", "route", "add", "default", "via", "10.137.0.1", "dev", "eth0", "onlink")
    vif = Downstream("vif5.0", ipaddress.IPv4Address("10.137.0.5"))
    nft(netvm, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, downstream=(vif,))))
    nft(target, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=False)))
    apply(
        netvm,
        QubeRules(
            hops=(
                dnat("aaaaaaaaaaaa", ports="80-80", toports="8080-8080", srchost=f"{ALLOWED}/32"),
            ),
        ),
    )
    # Qubes' worker beside it: the target's own outbound is all denied.
    nft(netvm, "-f", "-", stdin=worker_tables(firewall("10.137.0.5", "drop")))
    # The target admits the whole client network: any refusal below is the netvm's doing.
    apply(target, QubeRules(hops=(accept("aaaaaaaaaaaa", srchost="192.0.2.0/24"),)))
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            target,
            "socat",
            "TCP-LISTEN:8080,reuseaddr,fork",
            "SYSTEM:echo reached-target",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: ":8080 " in run(target, "ss", "-Hltn"), "the target's listener", timeout=10
        )
        yield {"client": client, "netvm": netvm, "target": target}
    finally:
        listener.terminate()
        listener.wait(timeout=10)


def connect(client: str, source: str) -> str:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            client,
            "socat",
            "-T",
            "3",
            "-",
            f"TCP:192.0.2.1:80,bind={source},connect-timeout=3",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    return result.stdout


def test_a_connection_from_srchost_reaches_the_target(path: dict[str, str]) -> None:
    assert connect(path["client"], ALLOWED).strip() == "reached-target"


def test_a_source_outside_srchost_does_not(path: dict[str, str]) -> None:
    assert connect(path["client"], ALLOWED).strip() == "reached-target"  # the path works
    assert connect(path["client"], OUTSIDER) == ""
    assert "reached" not in connect(path["client"], OUTSIDER)


@pytest.mark.parametrize(
    ("srchost", "ports", "reached"),
    [
        ("0.0.0.0/0", "80-80", {ALLOWED, OUTSIDER}),  # exact lookup without a source
        ("192.0.2.2/31", "80-80", {ALLOWED, OUTSIDER}),  # a network: the masked lookup
        ("192.0.2.0/31", "80-80", set()),
        ("192.0.2.0/31,192.0.2.3/32", "80-80", {OUTSIDER}),  # masked and exact together
        ("192.0.2.0/30", "80-81", {ALLOWED, OUTSIDER}),  # a range: the interval lookup
        (f"{ALLOWED}/32", "80-81", {ALLOWED}),
    ],
)
def test_every_lookup_shape_admits_exactly_its_sources(
    path: dict[str, str], srchost: str, ports: str, reached: set[str]
) -> None:
    hop = dnat(
        "bbbbbbbbbbbb",
        ports=ports,
        toports="8080-8080" if ports == "80-80" else "8080-8081",
        srchost=srchost,
    )
    apply(path["netvm"], QubeRules(hops=(hop,)))
    found = {
        s for s in (ALLOWED, OUTSIDER) if connect(path["client"], s).strip() == "reached-target"
    }
    assert found == reached
