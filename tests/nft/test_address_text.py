"""Addresses as nft reads them: the texts ipaddress writes, brackets before a port for IPv6."""

import ipaddress

from qubes_portfwd.nft.syntax import address_text, dnat_address, network


def test_texts_are_those_of_ipaddress_for_every_kind() -> None:
    values = [
        ipaddress.ip_address("10.137.0.6"),
        ipaddress.ip_address("fd09:24ef:4179::a89:6"),
        ipaddress.ip_network("10.137.0.6/32"),
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    for _ in range(2):  # the second time from the cache
        assert [address_text(v) for v in values] == [str(v) for v in values]


def test_an_address_and_its_host_network_keep_their_own_texts() -> None:
    address, host = ipaddress.ip_address("192.0.2.7"), ipaddress.ip_network("192.0.2.7/32")
    assert (address_text(address), address_text(host)) == ("192.0.2.7", "192.0.2.7/32")
    assert network(host) == "192.0.2.7/32"


def test_dnat_address_brackets_ipv6_only() -> None:
    assert dnat_address(ipaddress.ip_address("10.137.0.6")) == "10.137.0.6"
    assert dnat_address(ipaddress.ip_address("fd09::6")) == "[fd09::6]"
