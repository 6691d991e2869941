"""The outbound firewall entries the planner writes in network qubes, as Qubes does."""

from planner_lab import BOOT, NOW, lab_topology, rules

from qubes_portfwd.model.entries import FIREWALL_PREFIX, parse_firewall
from qubes_portfwd.planner import plan

OUTBOUND = (
    "action=accept dst4=192.0.2.0/24 proto=tcp dstports=443-443",
    "action=accept dst6=2001:db8::/32",
    "action=accept dsthost=example.com",
    "action=drop proto=udp",
    "action=forward forwardtype=external proto=tcp srcports=80 srchost=0.0.0.0/0",
    f"action=accept expire={int(NOW) - 1} specialtarget=dns",
    f"action=accept expire={int(NOW) + 1} proto=icmp",
)


def firewall_of(entries: dict[str, str], address: str) -> dict[str, str]:
    base = f"{FIREWALL_PREFIX}{address}/"
    return {k[len(base) :]: v for k, v in entries.items() if k.startswith(base)}


def test_each_family_gets_its_rules_in_order_without_the_other_family() -> None:
    result = plan({"work": rules(*OUTBOUND)}, lab_topology(ipv6=True), NOW, BOOT)
    firewall = result.entries["sys-firewall"]
    assert firewall_of(dict(firewall), "10.137.0.6") == {
        "policy": "drop",
        "0000": "action=accept dst4=192.0.2.0/24 proto=tcp dstports=443-443",
        "0001": "action=accept dsthost=example.com",
        "0002": "action=drop proto=udp",
        "0003": "action=accept proto=icmp",
    }
    assert firewall_of(dict(firewall), "fd09:24ef:4179::a89:6") == {
        "policy": "drop",
        "0000": "action=accept dst6=2001:db8::/32",
        "0001": "action=accept dsthost=example.com",
        "0002": "action=drop proto=udp",
        "0003": "action=accept proto=icmp",
    }


def test_entries_read_back_through_the_agent_parser() -> None:
    result = plan({"work": rules(*OUTBOUND)}, lab_topology(ipv6=True), NOW, BOOT)
    values = firewall_of(dict(result.entries["sys-firewall"]), "10.137.0.6")
    entry = parse_firewall("10.137.0.6", values)
    assert entry.policy == "drop" and len(entry.rules) == 4


def test_qube_without_rules_gets_qubes_default_accept() -> None:
    result = plan({}, lab_topology(), NOW, BOOT)
    assert firewall_of(dict(result.entries["sys-net"]), "10.137.0.3") == {
        "policy": "drop",
        "0000": "action=accept",
    }


def test_each_network_qube_holds_only_its_own_downstream_qubes() -> None:
    result = plan({}, lab_topology(), NOW, BOOT)
    addresses = {
        qube: sorted({k.split("/")[2] for k in entries if k.startswith(FIREWALL_PREFIX)})
        for qube, entries in result.entries.items()
    }
    assert addresses == {
        "sys-net": ["10.137.0.3"],
        "sys-firewall": ["10.137.0.6", "10.137.0.7", "10.137.0.8"],
        "sys-vpn": ["10.137.0.9"],
        "work": [],
        "personal": [],
        "vpn-work": [],
    }


def test_no_ipv6_address_no_ipv6_entries() -> None:
    result = plan({}, lab_topology(), NOW, BOOT)
    assert not any(":" in key for entries in result.entries.values() for key in entries)
