"""The planner on the issue's scenarios: paths, hops, entry texts, inactive reasons."""

from dataclasses import replace

from planner_lab import BOOT, NOW, forward_keys, lab_topology, rules

from qubes_portfwd.model.entries import parse_hop
from qubes_portfwd.model.rule import ExpireAt, ForwardRule, UntilReboot, forward_id
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.planner import ForwardState, HopRole, plan

WEB = "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080 srchost=0.0.0.0/0"


def web_id() -> str:
    rule = parse_rule(WEB)
    assert isinstance(rule, ForwardRule)
    return forward_id("work", rule)


def test_external_forward_through_sys_net_and_sys_firewall_exact_entries() -> None:
    result = plan({"work": rules("action=accept", WEB)}, lab_topology(), NOW, BOOT)
    ident = web_id()
    key = f"/qubes-portfwd/{ident}/4"
    assert result.entries["sys-net"][key] == (
        "role=dnat family=4 proto=tcp in=eth0 ports=80-80 to=10.137.0.3 toports=80-80 "
        "srchost=0.0.0.0/0"
    )
    assert result.entries["sys-firewall"][key] == (
        "role=dnat family=4 proto=tcp in=eth0 ports=80-80 to=10.137.0.6 toports=8080-8080 "
        "srchost=0.0.0.0/0"
    )
    assert result.entries["work"] == {
        key: "role=accept family=4 proto=tcp ports=8080-8080 srchost=0.0.0.0/0"
    }
    for qube in ("personal", "sys-vpn", "vpn-work"):
        assert forward_keys(result.entries[qube]) == []
    (forward,) = result.forwards
    assert (forward.forward_id, forward.target, forward.family) == (ident, "work", 4)
    assert forward.state == ForwardState.ACTIVE and forward.reason is None
    assert [(h.qube, h.role, h.key) for h in forward.hops] == [
        ("sys-net", HopRole.EDGE, key),
        ("sys-firewall", HopRole.NETVM, key),
        ("work", HopRole.TARGET, key),
    ]


def test_every_forward_entry_reads_back_through_the_agent_parser() -> None:
    result = plan({"work": rules(WEB)}, lab_topology(), NOW, BOOT)
    for entries in result.entries.values():
        for key in forward_keys(entries):
            hop = parse_hop(key, entries[key])
            assert hop.forward_id == web_id()


def test_every_qube_of_the_topology_gets_a_mapping() -> None:
    result = plan({}, lab_topology(), NOW, BOOT)
    assert set(result.entries) == set(lab_topology().qubes)
    assert result.forwards == ()


def test_internal_forward_uses_only_the_netvm_and_resolves_named_sources() -> None:
    internal = "action=forward forwardtype=internal proto=tcp srcports=8080 srchost=work,sys-vpn"
    result = plan({"personal": rules(internal)}, lab_topology(), NOW, BOOT)
    (forward,) = result.forwards
    assert forward.state == ForwardState.ACTIVE
    assert [(h.qube, h.role) for h in forward.hops] == [
        ("sys-firewall", HopRole.NETVM),
        ("personal", HopRole.TARGET),
    ]
    key = f"/qubes-portfwd/{forward.forward_id}/4"
    assert result.entries["sys-firewall"][key] == (
        "role=dnat family=4 proto=tcp in=downstream ports=8080-8080 to=10.137.0.7 "
        "toports=8080-8080 srchost=10.137.0.6/32,10.137.0.8/32"
    )
    assert result.entries["personal"][key] == (
        "role=accept family=4 proto=tcp ports=8080-8080 srchost=10.137.0.6/32,10.137.0.8/32"
    )
    assert forward_keys(result.entries["sys-net"]) == []
    assert forward_keys(result.entries["work"]) == []


def test_internal_forward_naming_a_missing_qube_is_inactive() -> None:
    internal = "action=forward forwardtype=internal proto=tcp srcports=22 srchost=work,ghost"
    (forward,) = plan({"personal": rules(internal)}, lab_topology(), NOW, BOOT).forwards
    assert forward.state == ForwardState.INACTIVE
    assert forward.reason == "source qube ghost does not exist"


def test_internal_forward_naming_a_qube_behind_another_netvm_is_inactive() -> None:
    internal = "action=forward forwardtype=internal proto=tcp srcports=22 srchost=vpn-work"
    result = plan({"personal": rules(internal)}, lab_topology(), NOW, BOOT)
    (forward,) = result.forwards
    assert forward.state == ForwardState.INACTIVE
    assert (
        forward.reason == "source qube vpn-work is not behind sys-firewall (its netvm is sys-vpn)"
    )
    assert all(forward_keys(e) == [] for e in result.entries.values())


def test_tunnel_qube_is_the_edge_and_nothing_is_planned_upstream_of_it() -> None:
    forward_rule = "action=forward forwardtype=external proto=udp srcports=51413 srchost=0.0.0.0/0"
    result = plan({"vpn-work": rules(forward_rule)}, lab_topology(), NOW, BOOT)
    (forward,) = result.forwards
    key = f"/qubes-portfwd/{forward.forward_id}/4"
    assert [(h.qube, h.role) for h in forward.hops] == [
        ("sys-vpn", HopRole.EDGE),
        ("vpn-work", HopRole.TARGET),
    ]
    assert result.entries["sys-vpn"][key] == (
        "role=dnat family=4 proto=udp in=wg0 ports=51413-51413 to=10.137.0.9 "
        "toports=51413-51413 srchost=0.0.0.0/0"
    )
    for upstream in ("sys-firewall", "sys-net"):
        assert forward_keys(result.entries[upstream]) == []


def test_port_range_remapped_at_the_netvm_only_and_both_protocols() -> None:
    ranged = (
        "action=forward forwardtype=external srcports=5000-5009 dstports=6000-6009 "
        "srchost=192.0.2.0/24,198.51.100.7"
    )
    result = plan({"work": rules(ranged)}, lab_topology(), NOW, BOOT)
    (forward,) = result.forwards
    key = f"/qubes-portfwd/{forward.forward_id}/4"
    sources = "srchost=192.0.2.0/24,198.51.100.7/32"
    assert result.entries["sys-net"][key] == (
        f"role=dnat family=4 proto=tcp,udp in=eth0 ports=5000-5009 to=10.137.0.3 "
        f"toports=5000-5009 {sources}"
    )
    assert result.entries["sys-firewall"][key] == (
        f"role=dnat family=4 proto=tcp,udp in=eth0 ports=5000-5009 to=10.137.0.6 "
        f"toports=6000-6009 {sources}"
    )
    assert result.entries["work"][key] == (
        f"role=accept family=4 proto=tcp,udp ports=6000-6009 {sources}"
    )


def test_ipv6_external_forward_uses_ipv6_addresses_on_every_hop() -> None:
    v6 = "action=forward forwardtype=external proto=tcp srcports=443 srchost=2001:db8::/32"
    result = plan({"work": rules(v6)}, lab_topology(ipv6=True), NOW, BOOT)
    (forward,) = result.forwards
    assert forward.family == 6 and forward.state == ForwardState.ACTIVE
    key = f"/qubes-portfwd/{forward.forward_id}/6"
    assert result.entries["sys-net"][key] == (
        "role=dnat family=6 proto=tcp in=eth0 ports=443-443 to=fd09:24ef:4179::a89:3 "
        "toports=443-443 srchost=2001:db8::/32"
    )
    assert result.entries["sys-firewall"][key] == (
        "role=dnat family=6 proto=tcp in=eth0 ports=443-443 to=fd09:24ef:4179::a89:6 "
        "toports=443-443 srchost=2001:db8::/32"
    )
    assert result.entries["work"][key] == (
        "role=accept family=6 proto=tcp ports=443-443 srchost=2001:db8::/32"
    )


def test_ipv6_forward_is_inactive_when_a_hop_has_no_ipv6() -> None:
    topology = lab_topology(ipv6=True)
    topology = topology.replace_qube(topology["sys-net"].with_changes(features={}))
    v6 = "action=forward forwardtype=external proto=tcp srcports=443 srchost=::/0"
    result = plan({"work": rules(v6)}, topology, NOW, BOOT)
    (forward,) = result.forwards
    assert forward.state == ForwardState.INACTIVE
    assert forward.reason == "IPv6 forward, but sys-net has no IPv6"
    assert all(forward_keys(e) == [] for e in result.entries.values())


def test_internal_forward_gets_both_families_where_ipv6_is_everywhere() -> None:
    internal = "action=forward forwardtype=internal proto=tcp srcports=22 srchost=work"
    result = plan({"personal": rules(internal)}, lab_topology(ipv6=True), NOW, BOOT)
    v4, v6 = result.forwards
    assert v4.forward_id == v6.forward_id
    assert (v4.family, v6.family) == (4, 6)
    assert result.by_id(v4.forward_id) == (v4, v6)
    assert result.entries["personal"][f"/qubes-portfwd/{v6.forward_id}/6"] == (
        "role=accept family=6 proto=tcp ports=22-22 srchost=fd09:24ef:4179::a89:6/128"
    )


def test_internal_forward_stays_ipv4_only_when_no_source_has_ipv6() -> None:
    topology = lab_topology(ipv6=True)
    topology = topology.replace_qube(topology["work"].with_changes(features={}))
    internal = "action=forward forwardtype=internal proto=tcp srcports=22 srchost=work"
    result = plan({"personal": rules(internal)}, topology, NOW, BOOT)
    assert [f.family for f in result.forwards] == [4]


def test_netvm_changed_since_via_makes_the_forward_inactive_naming_both_paths() -> None:
    pinned = WEB + " via=sys-firewall,sys-net"
    topology = lab_topology()
    moved = topology.replace_qube(topology["work"].with_changes(netvm="sys-vpn"))
    assert plan({"work": rules(pinned)}, topology, NOW, BOOT).forwards[0].active
    result = plan({"work": rules(pinned)}, moved, NOW, BOOT)
    (forward,) = result.forwards
    assert forward.state == ForwardState.INACTIVE
    assert forward.reason is not None
    assert "via=sys-firewall,sys-net" in forward.reason and "now sys-vpn" in forward.reason
    assert [h.qube for h in forward.hops] == ["sys-vpn", "work"]
    assert all(forward_keys(e) == [] for e in result.entries.values())


def test_follow_yes_follows_the_new_path() -> None:
    topology = lab_topology()
    moved = topology.replace_qube(topology["work"].with_changes(netvm="sys-vpn"))
    result = plan({"work": rules(WEB + " follow=yes")}, moved, NOW, BOOT)
    (forward,) = result.forwards
    assert forward.active
    assert [h.qube for h in forward.hops] == ["sys-vpn", "work"]
    assert "in=wg0" in result.entries["sys-vpn"][forward.hops[0].key]


def test_internal_forward_via_is_just_the_netvm() -> None:
    internal = "action=forward forwardtype=internal proto=tcp srcports=22 srchost=work"
    ok = plan({"personal": rules(internal + " via=sys-firewall")}, lab_topology(), NOW, BOOT)
    assert ok.forwards[0].active
    stale = plan({"personal": rules(internal + " via=sys-vpn")}, lab_topology(), NOW, BOOT)
    assert stale.forwards[0].state == ForwardState.INACTIVE


def test_target_without_netvm_is_inactive_with_the_reason() -> None:
    topology = lab_topology()
    offline = topology.replace_qube(topology["work"].with_changes(netvm=None))
    (forward,) = plan({"work": rules(WEB)}, offline, NOW, BOOT).forwards
    assert forward.state == ForwardState.INACTIVE
    assert forward.reason == "work has no netvm"
    assert [h.qube for h in forward.hops] == ["work"]


def test_a_qube_on_the_path_without_network_makes_it_inactive() -> None:
    topology = lab_topology()
    broken = topology.replace_qube(topology["sys-firewall"].with_changes(provides_network=False))
    (forward,) = plan({"work": rules(WEB)}, broken, NOW, BOOT).forwards
    assert forward.state == ForwardState.INACTIVE
    assert forward.reason == "sys-firewall does not provide network"


def test_forward_of_a_qube_not_in_the_topology_is_inactive() -> None:
    result = plan({"gone": rules(WEB)}, lab_topology(), NOW, BOOT)
    (forward,) = result.forwards
    assert forward.reason == "qube gone does not exist" and forward.hops == ()
    assert "gone" not in result.entries


def test_expired_forwards_are_ignored_entirely() -> None:
    web = parse_rule(WEB)
    assert isinstance(web, ForwardRule)
    expired = [
        replace(web, expire=ExpireAt(int(NOW) - 1)),
        replace(web, expire=UntilReboot("an-earlier-boot")),
    ]
    assert plan({"work": expired}, lab_topology(), NOW, BOOT).forwards == ()
    alive = [replace(web, expire=ExpireAt(int(NOW) + 60)), replace(web, expire=UntilReboot(BOOT))]
    assert len(plan({"work": alive[:1]}, lab_topology(), NOW, BOOT).forwards) == 1
    assert len(plan({"work": alive[1:]}, lab_topology(), NOW, BOOT).forwards) == 1


def test_through_lists_forwards_passing_a_network_qube() -> None:
    internal = "action=forward forwardtype=internal proto=tcp srcports=22 srchost=work"
    tunnelled = "action=forward forwardtype=external proto=tcp srcports=22 srchost=0.0.0.0/0"
    result = plan(
        {"work": rules(WEB), "personal": rules(internal), "vpn-work": rules(tunnelled)},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert {f.target for f in result.through("sys-firewall")} == {"work", "personal"}
    assert {f.target for f in result.through("sys-net")} == {"work"}
    assert {f.target for f in result.through("sys-vpn")} == {"vpn-work"}
    assert result.through("work") == ()
    assert [f.target for f in result.of_target("work")] == ["work"]


def test_the_plan_writes_no_outbound_firewall_of_qubes() -> None:
    # Qubes' own `/qubes-firewall/` is core-admin's to write: the plan holds forwards only.
    listed = {"work": rules("action=drop proto=udp", "action=accept dst4=192.0.2.0/24")}
    result = plan(listed, lab_topology(ipv6=True), NOW, BOOT)
    assert all(
        key.startswith("/qubes-portfwd/") for entries in result.entries.values() for key in entries
    )
