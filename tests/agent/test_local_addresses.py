"""The qube's addresses from `ip -j addr show`: global ones per interface, garbage ignored."""

import ipaddress
import json

from qubes_portfwd.agent.local_addresses import parse_interface_addresses

IP_OUTPUT = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "scope": "host"}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.0.2.2", "prefixlen": 24, "scope": "global"},
        {"family": "inet6", "local": "2001:db8:0:1::2", "prefixlen": 64, "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
    ]},
    {"ifname": "vif6.0", "addr_info": [{"local": "not-an-address", "scope": "global"}]},
    {"ifname": "x" * 16, "addr_info": [{"local": "10.0.0.1", "scope": "global"}]},
    "junk",
]  # fmt: skip


def test_global_addresses_per_interface() -> None:
    assert parse_interface_addresses(json.dumps(IP_OUTPUT)) == {
        "eth0": (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8:0:1::2"))
    }


def test_unreadable_output_means_no_addresses() -> None:
    assert parse_interface_addresses("not json") == {}
    assert parse_interface_addresses('{"a": 1}') == {}
