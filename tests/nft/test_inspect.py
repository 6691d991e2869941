"""Reading a live ruleset back into forwards: what the compiler loads is what is read back."""

import ipaddress
import json
from collections.abc import Callable

import pytest

from qubes_lab.nft_inspect import LiveDnat, LiveRules, expected_rules, inspect_ruleset
from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps

from .helpers import accept, dnat
from .lab import nft

HOPS = (
    dnat("aaaaaaaaaaaa", ports="80-81", toports="8080-8081", srchost="0.0.0.0/0"),
    dnat("bbbbbbbbbbbb", ports="90-90", inbound="downstream", proto="tcp,udp",
         srchost="10.0.0.0/8,192.168.0.1/32"),
    dnat("eeeeeeeeeeee", to="fd09::5", srchost="::/0", family=6),
    accept("cccccccccccc", ports="22-23"),
    accept("dddddddddddd", ports="25-25", srchost="1.2.3.4/32"),
    accept("ffffffffffff", ports="8080-8080", srchost="2001:db8::/32", family=6),
)  # fmt: skip
INTERFACES = {
    "eth0": (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8::2")),
    "vif5.0": (ipaddress.ip_address("10.137.0.2"),),
}


def test_expected_rules_name_every_dnat_and_the_merged_accept_elements() -> None:
    expected = expected_rules(HOPS)
    assert expected.forward_ids == {("aaaaaaaaaaaa", 4), ("bbbbbbbbbbbb", 4), ("eeeeeeeeeeee", 6)}
    assert LiveDnat("eeeeeeeeeeee", 6, ipaddress.ip_address("fd09::5")) in expected.dnats
    assert expected.inputs == {
        (4, "0.0.0.0/0 . tcp . 22-23"),
        (4, "1.2.3.4/32 . tcp . 25"),
        (6, "2001:db8::/32 . tcp . 8080"),
    }
    assert (4, "192.168.0.1/32 . 10.137.0.5 . udp . 90") in expected.forwards


def test_a_dnat_chain_that_no_map_dispatches_to_is_not_live() -> None:
    ruleset = {
        "nftables": [
            {"rule": {"family": "ip", "table": "qubes-portfwd", "chain": "fwd-aaaaaaaaaaaa",
                      "expr": [{"dnat": {"addr": "10.137.0.5"}}]}},
            {"map": {"family": "ip", "table": "qubes-portfwd", "name": "dnat-inbound",
                     "elem": []}},
        ]
    }  # fmt: skip
    assert inspect_ruleset(json.dumps(ruleset)) == LiveRules()


def test_garbage_is_refused_with_the_field() -> None:
    with pytest.raises(ValidationError, match="ruleset"):
        inspect_ruleset("[]")


@pytest.mark.lab
def test_a_loaded_ruleset_reads_back_as_its_hops(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, ipv6=True)))
    rules = QubeRules(hops=HOPS, interface_addresses=INTERFACES)
    owned = parse_owned_jumps(nft(ns, "-j", "list", "ruleset"))
    nft(ns, "-f", "-", stdin=compile_qube(rules, owned).script)
    live = inspect_ruleset(nft(ns, "-j", "list", "ruleset"))
    assert live.problems == ()
    assert live.without_hairpins() == expected_rules(HOPS)
    assert live.hairpins == {("aaaaaaaaaaaa", 4), ("eeeeeeeeeeee", 6)}
    # Emptied again: nothing of any forward is left.
    owned = parse_owned_jumps(nft(ns, "-j", "list", "ruleset"))
    nft(ns, "-f", "-", stdin=compile_qube(QubeRules(), owned).script)
    assert inspect_ruleset(nft(ns, "-j", "list", "ruleset")) == LiveRules()


def test_a_masked_lookup_with_the_wrong_mask_is_a_problem() -> None:
    ruleset = {
        "nftables": [
            {"set": {"family": "ip", "table": "qubes", "name": "portfwd-input-allowed-mask0",
                     "elem": [{"concat": ["10.0.0.0", "tcp", 80]}]}},
            {"rule": {"family": "ip", "table": "qubes", "chain": "portfwd-input", "expr": [
                {"match": {"op": "==", "left": {"concat": [
                    {"&": [{"payload": {"protocol": "ip", "field": "saddr"}}, "255.0.255.0"]},
                    {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}},
                ]}, "right": "@portfwd-input-allowed-mask0"}}]}},
        ]
    }  # fmt: skip
    live = inspect_ruleset(json.dumps(ruleset))
    assert live.inputs == frozenset()
    assert live.problems == (
        "lookup of portfwd-input-allowed-mask0: 255.0.255.0 is not a netmask of family 4",
        "qubes portfwd-input-allowed-mask0 holds elements but is never looked up",
    )


@pytest.mark.lab
def test_prefix_lengths_changing_between_applies_read_back_exactly(
    make_netns: Callable[[], str],
) -> None:
    """Slot 0 holds /24 networks, then /16 ones: nothing of the first apply stays."""
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, ipv6=True)))
    first = (
        dnat("aaaaaaaaaaaa", ports="80-80", srchost="192.168.1.0/24,10.1.0.0/16"),
        accept("bbbbbbbbbbbb", ports="22-22", srchost="192.168.1.0/24,172.16.5.0/24"),
        accept("cccccccccccc", ports="22-22", srchost="2001:db8:1::/48", family=6),
    )
    second = (
        dnat("aaaaaaaaaaaa", ports="80-80", srchost="10.2.0.0/16"),
        accept("bbbbbbbbbbbb", ports="23-23", srchost="10.3.0.0/16"),
    )
    for hops in (first, second, ()):
        owned = parse_owned_jumps(nft(ns, "-j", "list", "ruleset"))
        nft(ns, "-f", "-", stdin=compile_qube(QubeRules(hops=hops), owned).script)
        live = inspect_ruleset(nft(ns, "-j", "list", "ruleset"))
        assert live.problems == ()
        assert live == expected_rules(hops)
    assert "192.168.1.0" not in nft(ns, "list", "ruleset")
