"""The rule that lets the gateway's SSDP answer in: exactly one source, port and target."""

import ipaddress

import pytest

from qubes_portfwd.nft.ssdp_reply import SsdpReply, ssdp_reply_rules

GATEWAY = ipaddress.IPv4Address("10.137.0.3")
WORK = ipaddress.IPv4Address("10.137.0.6")


def test_the_rule_names_the_gateway_port_1900_and_the_qube() -> None:
    assert ssdp_reply_rules((SsdpReply(GATEWAY, WORK),), frozenset({4, 6})) == [
        "add rule ip qubes portfwd-input ct state new "
        "ip saddr 10.137.0.3 ip daddr 10.137.0.6 udp sport 1900 accept"
    ]


def test_ipv6_uses_the_ip6_table_and_a_missing_base_table_gets_nothing() -> None:
    reply = SsdpReply(ipaddress.IPv6Address("fd09::3"), ipaddress.IPv6Address("fd09::6"))
    [rule] = ssdp_reply_rules((reply,), frozenset({4, 6}))
    assert rule.startswith("add rule ip6 qubes portfwd-input ") and "ip6 saddr fd09::3" in rule
    assert ssdp_reply_rules((reply,), frozenset({4})) == []
    assert ssdp_reply_rules((), frozenset({4, 6})) == []


def test_mixed_families_are_refused() -> None:
    with pytest.raises(ValueError, match="one family"):
        SsdpReply(GATEWAY, ipaddress.IPv6Address("fd09::6"))
