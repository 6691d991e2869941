"""The compiled script's text for each kind of hop (Qubes' outbound firewall is not ours)."""

import random

from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import OwnedJump, OwnedJumps

from .helpers import accept, dnat, many_forwards

V4 = OwnedJumps(base_families=frozenset({4}))
BOTH = OwnedJumps(base_families=frozenset({4, 6}))


def script(rules: QubeRules, owned: OwnedJumps = V4) -> str:
    return compile_qube(rules, owned).script


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_dnat_dispatches_by_interface_source_protocol_and_port_to_the_forward_chain() -> None:
    hop = dnat("aaaaaaaaaaaa", ports="80-90", proto="tcp,udp", srchost="10.0.0.0/8,10.1.0.0/16")
    text = script(QubeRules(hops=(hop,)))
    # Overlapping sources of one forward are collapsed: map keys must not overlap.
    assert '"eth0" . 10.0.0.0/8 . tcp . 80-90 : goto fwd-aaaaaaaaaaaa,' in text
    assert '"eth0" . 10.0.0.0/8 . udp . 80-90 : goto fwd-aaaaaaaaaaaa }' in text
    assert "meta l4proto { tcp, udp } dnat ip to 10.137.0.5" in lines(text)
    assert "fib daddr type local jump dispatch" in lines(text)
    assert "iifname . ip saddr . meta l4proto . th dport vmap @dnat-inbound" in lines(text)


def test_single_ports_from_everywhere_one_address_or_a_network_dispatch_by_exact_lookups() -> None:
    hops = (
        dnat("aaaaaaaaaaaa", ports="80-80", srchost="0.0.0.0/0"),
        dnat("bbbbbbbbbbbb", ports="81-81", srchost="192.0.2.7,192.0.2.9"),
        dnat("cccccccccccc", ports="82-82", srchost="192.0.2.0/24"),
        dnat("dddddddddddd", ports="83-84", srchost="198.51.100.0/24"),
    )
    text = script(QubeRules(hops=hops))
    declared = text[text.index("map dnat-inbound-any") :]
    assert declared.index('"eth0" . tcp . 80 : goto fwd-aaaaaaaaaaaa') < declared.index(
        "map dnat-inbound-host"
    )
    assert '"eth0" . 192.0.2.7 . tcp . 81 : goto fwd-bbbbbbbbbbbb' in declared
    # A network with one port: its address, looked up by the source masked to its length.
    assert "map dnat-inbound-mask0 {\n    type ifname . ipv4_addr . inet_proto" in declared
    assert '"eth0" . 192.0.2.0 . tcp . 82 : goto fwd-cccccccccccc' in declared
    # A port range stays in the interval map.
    assert '"eth0" . 198.51.100.0/24 . tcp . 83-84 : goto fwd-dddddddddddd' in declared
    assert "iifname . meta l4proto . th dport vmap @dnat-inbound-any" in lines(text)
    assert "iifname . ip saddr . meta l4proto . th dport vmap @dnat-inbound-host" in lines(text)
    assert (
        "iifname . ip saddr & 255.255.255.0 . meta l4proto . th dport vmap @dnat-inbound-mask0"
    ) in lines(text)
    # Only the interval forms are interval sets: the others are hash tables.
    assert text.count("flags interval") == 2 * 3 + 2  # dispatch maps per family, accept sets
    assert "add element ip qubes portfwd-forward-allowed-any { 10.137.0.5 . tcp . 80 }" in text
    assert (
        "add element ip qubes portfwd-forward-allowed-host "
        "{ 192.0.2.7 . 10.137.0.5 . tcp . 81, 192.0.2.9 . 10.137.0.5 . tcp . 81 }"
    ) in text
    assert (
        "add element ip qubes portfwd-forward-allowed-mask0 { 192.0.2.0 . 10.137.0.5 . tcp . 82 }"
    ) in text
    assert (
        "add rule ip qubes portfwd-forward ct state new ct status dnat ip saddr & 255.255.255.0 "
        ". ip daddr . meta l4proto . th dport @portfwd-forward-allowed-mask0 accept"
    ) in text


def test_without_masked_lookups_every_network_is_in_the_interval_sets() -> None:
    hop = dnat("cccccccccccc", ports="82-82", srchost="192.0.2.0/24")
    text = compile_qube(QubeRules(hops=(hop,)), V4, max_masked=0).script
    assert "@portfwd-forward-allowed-mask" not in text and "map dnat-inbound-mask" not in text
    assert '"eth0" . 192.0.2.0/24 . tcp . 82 : goto fwd-cccccccccccc' in text
    assert (
        "add element ip qubes portfwd-forward-allowed { 192.0.2.0/24 . 10.137.0.5 . tcp . 82 }"
    ) in text


def test_lengths_without_a_slot_go_to_the_interval_sets() -> None:
    hops = (
        dnat("aaaaaaaaaaaa", ports="80-80", srchost="10.0.0.0/8,192.0.2.0/24,198.51.100.0/24"),
        dnat("bbbbbbbbbbbb", ports="81-81", srchost="172.16.0.0/12,203.0.113.0/25"),
    )
    text = compile_qube(QubeRules(hops=hops), V4, max_masked=2).script
    # The first two IPv4 slots are /24 and /16: the rest goes to the interval sets.
    assert "ip saddr & 255.255.255.0 . meta l4proto . th dport vmap @dnat-inbound-mask0" in text
    assert "ip saddr & 255.255.0.0 . meta l4proto . th dport vmap @dnat-inbound-mask1" in text
    assert "map dnat-inbound-mask2" not in text
    assert '"eth0" . 192.0.2.0 . tcp . 80 : goto fwd-aaaaaaaaaaaa' in text
    assert '"eth0" . 10.0.0.0/8 . tcp . 80 : goto fwd-aaaaaaaaaaaa' in text
    assert '"eth0" . 172.16.0.0/12 . tcp . 81 : goto fwd-bbbbbbbbbbbb' in text
    assert '"eth0" . 203.0.113.0/25 . tcp . 81 : goto fwd-bbbbbbbbbbbb' in text


def test_every_slot_is_there_whatever_the_forwards() -> None:
    """The structure never depends on the forwards, so a change can be loaded in place."""
    empty = compile_qube(QubeRules(), V4).script
    one = compile_qube(QubeRules(hops=(dnat("aaaaaaaaaaaa", srchost="192.0.2.0/24"),)), V4)
    for slot, mask in enumerate(("255.255.255.0", "255.255.0.0", "255.0.0.0", "255.240.0.0")):
        rule = f"ip saddr & {mask} . meta l4proto . th dport vmap @dnat-inbound-mask{slot}"
        assert rule in empty and rule in one.script
    assert "ct label 127 masquerade" in empty


def test_ipv6_networks_are_masked_with_an_ipv6_mask() -> None:
    hop = accept("aaaaaaaaaaaa", srchost="2001:db8:1:2::/64", family=6)
    text = script(QubeRules(hops=(hop,)), BOTH)
    assert "add element ip6 qubes portfwd-input-allowed-mask0 { 2001:db8:1:2:: . tcp . 8080 }" in (
        text
    )
    assert (
        "ip6 saddr & ffff:ffff:ffff:ffff:: . meta l4proto . th dport "
        "@portfwd-input-allowed-mask0 accept"
    ) in text


def test_every_masked_slot_is_declared_emptied_and_looked_up() -> None:
    text = lines(script(QubeRules(hops=(accept("aaaaaaaaaaaa", srchost="10.0.0.0/24"),))))
    for slot in range(8):
        for base in ("portfwd-input-allowed", "portfwd-forward-allowed"):
            assert f"set {base}-mask{slot} {{" in text
            assert f"flush set ip qubes {base}-mask{slot}" in text
    looked_up = [line for line in text if line.startswith("add rule") and "-mask" in line]
    assert len(looked_up) == 2 * 8  # each slot of both chains, used or not
    assert (
        "add rule ip qubes portfwd-input ct state new "
        "ip saddr & 255.255.255.0 . meta l4proto . th dport @portfwd-input-allowed-mask0 accept"
    ) in looked_up
    assert "add element ip qubes portfwd-input-allowed-mask0 { 10.0.0.0 . tcp . 8080 }" in text
    assert not any(line.startswith("delete set") for line in text)


def test_dnat_remaps_ports_one_to_one_through_the_shared_port_map() -> None:
    hop = dnat("aaaaaaaaaaaa", ports="80-82", toports="8080-8082", srchost="192.0.2.0/24")
    text = script(QubeRules(hops=(hop,)))
    assert (
        "meta l4proto tcp dnat ip to 10.137.0.5 : "
        "iifname . meta l4proto . th dport map @ports-inbound"
    ) in lines(text)
    assert '"eth0" . tcp . 81 : 8081,' in text
    assert '"eth0" . tcp . 82 : 8082 }' in text
    assert "192.0.2.0/24 . 10.137.0.5 . tcp . 8080-8082" in text


def test_single_port_remap_and_ipv6_brackets() -> None:
    hop = dnat("aaaaaaaaaaaa", toports="8080-8080", to="fd09::5", srchost="::/0", family=6)
    text = script(QubeRules(hops=(hop,)), BOTH)
    assert "meta l4proto tcp dnat ip6 to [fd09::5]:8080" in lines(text)
    assert "add element ip6 qubes portfwd-forward-allowed-any { fd09::5 . tcp . 8080 }" in text


def test_internal_forward_uses_the_downstream_map() -> None:
    hop = dnat("aaaaaaaaaaaa", inbound="downstream", to="10.137.0.6", srchost="10.137.0.7")
    text = script(QubeRules(hops=(hop,)))
    assert "tcp . 80 : goto fwd-aaaaaaaaaaaa" in text
    assert "portfwd-forward-allowed-host { 10.137.0.7 . 10.137.0.6 . tcp . 80 }" in text


def test_accept_hops_open_input_only_for_their_sources_and_overlaps_are_merged() -> None:
    hops = (
        accept("aaaaaaaaaaaa", ports="8080-8080", srchost="0.0.0.0/0"),
        accept("bbbbbbbbbbbb", ports="8080-8081", srchost="10.0.0.0/8"),
    )
    text = script(QubeRules(hops=hops))
    assert "add element ip qubes portfwd-input-allowed-any { tcp . 8080 }" in text
    assert "add element ip qubes portfwd-input-allowed-mask2 { 10.0.0.0 . tcp . 8081 }" in text
    assert (
        "add rule ip qubes portfwd-input ct state new "
        "ip saddr . meta l4proto . th dport @portfwd-input-allowed accept"
    ) in text
    assert (
        "add rule ip qubes portfwd-input ct state new "
        "meta l4proto . th dport @portfwd-input-allowed-any accept"
    ) in text


def test_jumps_are_deleted_by_handle_and_added_once() -> None:
    owned = OwnedJumps(
        jumps=(OwnedJump(4, "custom-forward", 7), OwnedJump(4, "custom-input", 9)),
        base_families=frozenset({4}),
    )
    text = lines(script(QubeRules(), owned))
    assert text[2:4] == [
        "delete rule ip qubes custom-forward handle 7",
        "delete rule ip qubes custom-input handle 9",
    ]
    assert (
        text.count('add rule ip qubes custom-forward jump portfwd-forward comment "qubes-portfwd"')
        == 1
    )
    assert (
        text.count('add rule ip qubes custom-input jump portfwd-input comment "qubes-portfwd"') == 1
    )


def test_clashing_dnat_is_skipped_whatever_the_order() -> None:
    first = dnat("aaaaaaaaaaaa", ports="80-90")
    second = dnat("bbbbbbbbbbbb", ports="90-95", proto="tcp,udp")
    other_interface = dnat("cccccccccccc", ports="80-90", inbound="wg0")
    for hops in ((first, second, other_interface), (other_interface, second, first)):
        compiled = compile_qube(QubeRules(hops=hops), V4)
        assert [(s.forward_id, s.reason) for s in compiled.skipped] == [
            ("bbbbbbbbbbbb", "tcp/90-95 on eth0 is already forwarded by aaaaaaaaaaaa")
        ]
        assert "fwd-bbbbbbbbbbbb" not in compiled.script
        assert "fwd-cccccccccccc" in compiled.script


def test_ipv6_hops_are_skipped_without_ip6_qubes() -> None:
    hop = dnat("aaaaaaaaaaaa", to="fd09::5", srchost="::/0", family=6)
    compiled = compile_qube(QubeRules(hops=(hop,)), V4)
    assert compiled.skipped[0].reason == "Qubes' base table ip6 qubes is missing"
    assert "fwd-aaaaaaaaaaaa" not in compiled.script
    assert "table ip6 qubes {" not in compiled.script
    # A stale table from when IPv6 was on is still removed.
    assert "delete table ip6 qubes-portfwd" in compiled.script


def test_same_input_in_any_order_gives_the_same_script() -> None:
    hops = list(many_forwards(40)) + [
        accept(f"{n:012x}", ports=f"{n + 1}-{n + 1}") for n in range(9)
    ]
    expected = script(QubeRules(hops=tuple(hops)))
    random.Random(7).shuffle(hops)
    assert script(QubeRules(hops=tuple(hops))) == expected


def test_no_script_touches_qubes_firewall_table() -> None:
    # Qubes' worker owns `ip|ip6 qubes-firewall`: a network qube's hops stay out of it.
    netvm = (
        dnat("aaaaaaaaaaaa"),
        dnat("bbbbbbbbbbbb", inbound="downstream", to="10.137.0.6", srchost="10.137.0.7"),
    )
    for rules in (QubeRules(hops=(accept("aaaaaaaaaaaa"),)), QubeRules(hops=netvm)):
        assert "qubes-firewall" not in script(rules, BOTH)


def test_forwards_sharing_a_target_port_compile_to_a_union_without_clashes() -> None:
    # On a netvm: two outside ports and an internal port, all onto 10.137.0.5:8080.
    netvm = (
        dnat("aaaaaaaaaaaa", ports="80-80", toports="8080-8080", srchost="192.0.2.2"),
        dnat("bbbbbbbbbbbb", ports="81-81", toports="8080-8080", srchost="192.0.2.0/24"),
        dnat("cccccccccccc", inbound="downstream", toports="8080-8080", srchost="10.137.0.6"),
    )
    compiled = compile_qube(QubeRules(hops=netvm), V4)
    assert compiled.skipped == ()  # different sides or ports: nothing clashes
    text = compiled.script
    assert '"eth0" . 192.0.2.2 . tcp . 80 : goto fwd-aaaaaaaaaaaa' in text
    assert '"eth0" . 192.0.2.0 . tcp . 81 : goto fwd-bbbbbbbbbbbb' in text
    assert "10.137.0.6 . tcp . 80 : goto fwd-cccccccccccc" in text
    # The forward set holds each source once for the shared target port (the /24 covers
    # 192.0.2.2): the kernel refuses overlapping interval elements.
    assert (
        "add element ip qubes portfwd-forward-allowed-mask0 { 192.0.2.0 . 10.137.0.5 . tcp . 8080 }"
    ) in text
    assert "192.0.2.2 . 10.137.0.5 . tcp . 8080" not in text
    # On the target: one accept per forward, one element per source.
    target = (
        accept("aaaaaaaaaaaa", srchost="192.0.2.2"),
        accept("bbbbbbbbbbbb", srchost="192.0.2.0/24"),
        accept("cccccccccccc", srchost="10.137.0.6"),
    )
    text = script(QubeRules(hops=target))
    assert "add element ip qubes portfwd-input-allowed-host { 10.137.0.6 . tcp . 8080 }" in text
    assert "add element ip qubes portfwd-input-allowed-mask0 { 192.0.2.0 . tcp . 8080 }" in text
    assert "192.0.2.2 . tcp . 8080" not in text
