"""Hairpin in the compiled script: which addresses, which hops, the label and the masquerade."""

import ipaddress

from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.hairpin import HAIRPIN_LABEL, outside_addresses
from qubes_portfwd.nft.owned import OwnedJumps

from .helpers import dnat

V4 = OwnedJumps(base_families=frozenset({4}))
ip = ipaddress.ip_address
EDGE = {"eth0": (ip("192.0.2.2"), ip("fe80::1")), "vif6.0": (ip("10.137.0.2"),)}
MIDDLE = {"eth0": (ip("10.137.0.3"),), "vif6.0": (ip("10.137.0.3"),)}


def script(hops: tuple, interfaces: dict) -> str:  # type: ignore[type-arg]
    return compile_qube(QubeRules(hops=hops, interface_addresses=interfaces), V4).script


def test_outside_addresses_are_those_only_one_interface_has() -> None:
    assert outside_addresses(EDGE, 4) == {"eth0": [ip("192.0.2.2")], "vif6.0": [ip("10.137.0.2")]}
    assert outside_addresses(MIDDLE, 4) == {}
    assert outside_addresses(EDGE, 6) == {}  # link-local is never an outside address


def test_the_edge_dnats_its_outside_address_from_downstream_with_the_same_sources() -> None:
    text = script((dnat("aaaaaaaaaaaa", ports="80-81", toports="8080-8081",
                        srchost="0.0.0.0/0,10.0.0.0/8"),), EDGE)  # fmt: skip
    assert "192.0.2.2 . 0.0.0.0/0 . tcp . 80-81 : goto hairpin-aaaaaaaaaaaa" in text
    assert "192.0.2.2 . tcp . 81 : 8081" in text
    assert (
        f"meta l4proto tcp ct label set {HAIRPIN_LABEL} dnat ip to 10.137.0.5 : "
        "ip daddr . meta l4proto . th dport map @ports-hairpin"
    ) in text
    assert f"ct label {HAIRPIN_LABEL} masquerade" in text
    # The outside address is more specific than an internal forward's "any own address".
    assert text.index("vmap @dnat-hairpin") < text.index("vmap @dnat-downstream")


def test_no_hairpin_on_a_middle_hop_for_internal_forwards_or_without_addresses() -> None:
    hop = dnat("aaaaaaaaaaaa")
    internal = dnat("bbbbbbbbbbbb", inbound="downstream", ports="90-90")
    for text in (script((hop,), MIDDLE), script((internal,), EDGE), script((hop,), {})):
        assert "chain hairpin-" not in text
        assert "goto hairpin-" not in text
        assert "ct label set" not in text  # the masquerade chain is there, but nothing labels


def test_a_hop_on_another_interface_does_not_hairpin_on_eth0_addresses() -> None:
    text = script((dnat("aaaaaaaaaaaa", inbound="wg0"),), {**EDGE, "wg0": (ip("100.64.0.2"),)})
    assert "100.64.0.2 . tcp . 80 : goto hairpin-aaaaaaaaaaaa" in text
    assert "192.0.2.2 ." not in text
