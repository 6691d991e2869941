"""Qubes' base ruleset text: the structure the lab loads into every qube."""

import ipaddress

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset


def chain_body(script: str, table: str, chain: str) -> list[str]:
    """The rule lines of one chain in a script written as `table … { chain … { … } }`."""
    lines = [line.strip() for line in script.splitlines()]
    start = lines.index(f"table {table} {{")
    begin = lines.index(f"chain {chain} {{", start)
    end = lines.index("}", begin)
    return lines[begin + 1 : end]


NETVM = BaseParams(
    provides_network=True,
    ipv6=True,
    downstream=(
        Downstream("vif5.0", ipaddress.IPv4Address("10.137.0.5"), ipaddress.IPv6Address("fd09::5")),
        Downstream("vif6.0", ipaddress.IPv4Address("10.137.0.6")),
    ),
    upstream_dns=(ipaddress.IPv4Address("192.0.2.53"),),
)


def test_input_drops_by_policy_and_jumps_to_custom_input_first() -> None:
    for table in ("ip qubes", "ip6 qubes"):
        body = chain_body(base_ruleset(NETVM), table, "input")
        assert body[0] == "type filter hook input priority filter; policy drop;"
        assert body[1] == "jump custom-input"


def test_forward_jumps_to_custom_forward_first_then_drops_new_flows_toward_vifs() -> None:
    for table in ("ip qubes", "ip6 qubes"):
        body = chain_body(base_ruleset(NETVM), table, "forward")
        assert body[1] == "jump custom-forward"
        assert body.index("ct state related,established accept") < body.index(
            "oifgroup 2 counter drop"
        )


def test_antispoofing_sets_hold_each_vif_with_its_own_addresses() -> None:
    script = base_ruleset(NETVM)
    assert '"vif5.0" . 10.137.0.5' in script
    assert '"vif6.0" . 10.137.0.6' in script
    assert '"vif5.0" . fd09::5' in script
    assert 'vif6.0" . fd09' not in script  # no IPv6 address: its IPv6 is spoofed by definition
    assert chain_body(script, "ip qubes", "antispoof") == [
        "iifname . ip saddr @allowed accept",
        "counter drop",
    ]


def test_network_qube_gets_dns_dnat_and_firewall_tables_with_no_source_chains() -> None:
    script = base_ruleset(NETVM)
    assert "ip daddr 10.139.1.1 udp dport 53 dnat to 192.0.2.53" in script
    assert "ip daddr 10.139.1.2 tcp dport 53 dnat to 192.0.2.53" in script
    for table in ("ip qubes-firewall", "ip6 qubes-firewall"):
        body = chain_body(script, table, "forward")
        assert body == [
            "type filter hook forward priority 0; policy drop;",
            "ct state established,related accept",
            'meta iifname != "vif*" accept',
            "jump qubes-forward",
        ]
        assert chain_body(script, table, "qubes-forward") == []


def test_network_qube_without_resolvers_drops_dns_to_the_virtual_servers() -> None:
    script = base_ruleset(BaseParams(provides_network=True))
    assert chain_body(script, "ip qubes", "dnat-dns")[1:] == [
        "ip daddr 10.139.1.1 udp dport 53 drop",
        "ip daddr 10.139.1.1 tcp dport 53 drop",
        "ip daddr 10.139.1.2 udp dport 53 drop",
        "ip daddr 10.139.1.2 tcp dport 53 drop",
    ]


def test_plain_qube_has_no_firewall_tables_and_ipv6_off_drops_all_ipv6() -> None:
    script = base_ruleset(BaseParams(provides_network=False))
    assert "qubes-firewall" not in script
    assert "dnat-dns" not in script
    assert "table ip6 qubes {" not in script
    assert chain_body(script, "ip6 qbs-filter", "forward") == [
        "type filter hook forward priority filter; policy drop;",
        "counter",
    ]
