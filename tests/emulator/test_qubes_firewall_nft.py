"""The emulated worker's `qubes-firewall` tables: Qubes' semantics per rule, fail closed."""

import ipaddress

from qubes_lab.qubes_firewall.entries import FirewallEntry, parse_firewall
from qubes_lab.qubes_firewall.nft import firewall_script


def firewall(address: str, policy: str, *rules: str) -> FirewallEntry:
    values = {"policy": policy} | {f"{n:04}": rule for n, rule in enumerate(rules)}
    return parse_firewall(address, values)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_firewall_rules_follow_qubes_semantics() -> None:
    entry = firewall(
        "10.137.0.5",
        "drop",
        "action=accept dsthost=example.org proto=tcp dstports=443-443",
        "action=accept specialtarget=dns",
        "action=drop proto=udp specialtarget=dns",
        "action=accept proto=tcp specialtarget=dns dstports=80-80",  # not DNS: Qubes skips it
        "action=drop proto=icmp icmptype=8",
        "action=accept dst4=192.0.2.7/24",
    )
    script, blocked = firewall_script(
        [entry],
        [],
        {"example.org": (ipaddress.ip_address("93.184.216.34"),)},
        [ipaddress.ip_address("10.139.1.1")],
    )
    assert blocked == []
    text = lines(script)
    start = text.index("chain qbs-10-137-0-5 {")
    assert text[start + 1 : text.index("}", start)] == [
        "meta l4proto tcp ip daddr 93.184.216.34/32 tcp dport 443 accept",
        "meta l4proto tcp ip daddr @dns-addr tcp dport 53 accept",
        "meta l4proto udp ip daddr @dns-addr udp dport 53 accept",
        "meta l4proto udp ip daddr @dns-addr udp dport 53 reject with icmp type admin-prohibited",
        "meta l4proto icmp icmp type 8 reject with icmp type admin-prohibited",
        "ip daddr 192.0.2.0/24 accept",
        "reject with icmp type admin-prohibited",
    ]
    dispatch = text.index("chain qubes-forward {")
    assert text[dispatch + 1] == "ip saddr 10.137.0.5 jump qbs-10-137-0-5"
    forward = text.index("chain forward {")
    assert text[forward + 1 : forward + 6] == [
        "type filter hook forward priority 0; policy drop;",
        "ct state established,related accept",
        'meta iifname != "vif*" accept',
        "jump qubes-forward",
        "}",
    ]


def test_sources_that_cannot_be_compiled_fall_back_to_drop_and_are_reported() -> None:
    script, blocked = firewall_script(
        [
            firewall("10.137.0.5", "accept", "action=accept dsthost=nowhere.example proto=tcp"),
            firewall("10.137.0.6", "accept", "action=accept dst6=2001:db8::/32"),
            firewall("10.137.0.7", "accept"),
        ],
        [ipaddress.ip_address("10.137.0.8")],
        {},
        [],
    )
    assert {(str(b.address), b.reason) for b in blocked} == {
        ("10.137.0.5", "dsthost=nowhere.example did not resolve to an IPv4 address"),
        ("10.137.0.6", "dst6=2001:db8::/32 is not IPv4"),
        ("10.137.0.8", "its firewall entry could not be parsed"),
    }
    text = lines(script)
    for chain in ("qbs-10-137-0-5", "qbs-10-137-0-6", "qbs-10-137-0-8"):
        start = text.index(f"chain {chain} {{")
        assert text[start + 1 : start + 3] == ["reject with icmp type admin-prohibited", "}"]
    start = text.index("chain qbs-10-137-0-7 {")
    assert text[start + 1] == "accept"


def test_both_families_are_rebuilt_whole_in_one_transaction() -> None:
    script, _ = firewall_script([firewall("fd09:24ef:4179::a89:6", "drop")], [], {}, [])
    text = lines(script)
    for ip in ("ip", "ip6"):
        assert f"delete table {ip} qubes-firewall" in text
    assert "ip6 saddr fd09:24ef:4179::a89:6 jump qbs-fd09-24ef-4179--a89-6" in text
