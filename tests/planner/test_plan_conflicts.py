"""Conflicts: who keeps a contested port, the loser's reason, and checking a proposed list.

A conflict is one listening port claimed twice on the same side of one network qube (its
uplink, or its downstream side); the target claims nothing, it accepts the union.
"""

from planner_lab import BOOT, NOW, forward_keys, lab_topology, rules

from qubes_portfwd.model.entries import AcceptHop, DnatHop, Hop, parse_hop
from qubes_portfwd.planner import ForwardState, Plan, conflicts_for, plan


def external(ports: str, *, proto: str = "tcp", to: str = "", sources: str = "0.0.0.0/0") -> str:
    dst = f" dstports={to}" if to else ""
    return (
        f"action=forward forwardtype=external proto={proto} srcports={ports}{dst} srchost={sources}"
    )


def internal(ports: str, sources: str, *, proto: str = "tcp", to: str = "") -> str:
    dst = f" dstports={to}" if to else ""
    return (
        f"action=forward forwardtype=internal proto={proto} srcports={ports}{dst} srchost={sources}"
    )


def states(result: Plan) -> dict[tuple[str, int], ForwardState]:
    return {(f.target, f.position): f.state for f in result.forwards}


def hops_on(result: Plan, qube: str) -> list[Hop]:
    """The forward entries of `qube`, read back as the agent reads them."""
    return [parse_hop(k, result.entries[qube][k]) for k in forward_keys(result.entries[qube])]


def test_same_port_on_two_targets_first_by_name_wins_and_loser_names_it() -> None:
    result = plan(
        {"work": rules(external("80")), "personal": rules(external("80"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    (kept,) = result.of_target("personal")
    (lost,) = result.of_target("work")
    assert kept.state == ForwardState.ACTIVE
    assert lost.state == ForwardState.CONFLICT
    assert lost.conflict_with == kept.forward_id
    assert lost.reason == (
        f"tcp/80 on sys-net (uplink eth0, IPv4) is taken by forward {kept.forward_id} of "
        "personal: action=forward forwardtype=external proto=tcp srcports=80-80 "
        "dstports=80-80 srchost=0.0.0.0/0"
    )
    assert forward_keys(result.entries["work"]) == []
    assert forward_keys(result.entries["sys-net"]) == [kept.hops[0].key]


def test_order_keeps_the_older_forward_active() -> None:
    both = {"work": rules(external("80")), "personal": rules(external("80"))}
    first = plan(both, lab_topology(), NOW, BOOT)
    work_id = first.of_target("work")[0].forward_id
    personal_id = first.of_target("personal")[0].forward_id
    result = plan(both, lab_topology(), NOW, BOOT, order={work_id: 1, personal_id: 2})
    assert result.of_target("work")[0].state == ForwardState.ACTIVE
    assert result.of_target("personal")[0].state == ForwardState.CONFLICT
    assert result.of_target("personal")[0].conflict_with == work_id


def test_overlapping_ranges_conflict_and_adjacent_ones_do_not() -> None:
    adjacent = plan(
        {"work": rules(external("80-84")), "personal": rules(external("85-90"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert set(states(adjacent).values()) == {ForwardState.ACTIVE}
    overlapping = plan(
        {"work": rules(external("80-85")), "personal": rules(external("85-90"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    (lost,) = overlapping.in_state(ForwardState.CONFLICT)
    assert lost.reason is not None and lost.reason.startswith("tcp/85 on sys-net (uplink eth0")


def test_other_protocol_or_family_does_not_conflict() -> None:
    result = plan(
        {
            "work": rules(external("53", proto="udp"), external("53", sources="::/0")),
            "personal": rules(external("53")),
        },
        lab_topology(ipv6=True),
        NOW,
        BOOT,
    )
    assert set(states(result).values()) == {ForwardState.ACTIVE}


def test_internal_and_external_on_the_same_netvm_port_are_on_different_sides() -> None:
    # sys-firewall: work's external forward enters by its uplink on 8080, personal's
    # internal one listens on its downstream side on 8080.
    result = plan(
        {"work": rules(external("8080")), "personal": rules(internal("8080", "work"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert set(states(result).values()) == {ForwardState.ACTIVE}
    sides = sorted(h.inbound for h in hops_on(result, "sys-firewall") if isinstance(h, DnatHop))
    assert sides == ["downstream", "eth0"]


def test_two_internal_forwards_on_one_netvm_port_conflict_on_its_downstream_side() -> None:
    result = plan(
        {"work": rules(internal("8443", "personal")), "personal": rules(internal("8443", "work"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    (kept,) = result.of_target("personal")
    (lost,) = result.of_target("work")
    assert (kept.state, lost.state) == (ForwardState.ACTIVE, ForwardState.CONFLICT)
    assert lost.reason is not None
    assert lost.reason.startswith("tcp/8443 on sys-firewall (downstream side, IPv4) is taken by")


def test_external_and_internal_to_one_port_of_one_qube_both_run() -> None:
    # A web server exposed to the LAN and, internally, to personal.
    lan = external("80", to="8080", sources="192.0.2.0/24")
    result = plan(
        {"work": rules(lan, internal("8443", "personal", to="8080"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert set(states(result).values()) == {ForwardState.ACTIVE}
    accepts = [h for h in hops_on(result, "work") if isinstance(h, AcceptHop)]
    assert sorted((h.ports.text, tuple(map(str, h.sources))) for h in accepts) == [
        ("8080-8080", ("10.137.0.7/32",)),
        ("8080-8080", ("192.0.2.0/24",)),
    ]
    dnats = [h for h in hops_on(result, "sys-firewall") if isinstance(h, DnatHop)]
    assert sorted((h.inbound, h.ports.text, h.toports.text) for h in dnats) == [
        ("downstream", "8443-8443", "8080-8080"),
        ("eth0", "80-80", "8080-8080"),
    ]


def test_two_outside_ports_to_one_qube_port_both_run() -> None:
    result = plan(
        {"work": rules(external("80", to="8080"), external("81", to="8080"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert states(result) == {("work", 0): ForwardState.ACTIVE, ("work", 1): ForwardState.ACTIVE}
    assert [h.ports.text for h in hops_on(result, "work")] == ["8080-8080"] * 2
    netvm = sorted((h.ports.text, h.toports.text) for h in hops_on(result, "sys-firewall"))
    assert netvm == [("80-80", "8080-8080"), ("81-81", "8080-8080")]
    edge = sorted((h.ports.text, h.toports.text) for h in hops_on(result, "sys-net"))
    assert edge == [("80-80", "80-80"), ("81-81", "81-81")]


def test_an_internal_port_of_a_netvm_and_an_outside_port_through_it_do_not_conflict() -> None:
    # personal's internal forward on sys-firewall:9001, work's external forward whose
    # outside port (on sys-net, then sys-firewall's uplink) is 9001 too.
    result = plan(
        {"personal": rules(internal("9001", "work")), "work": rules(external("9001", to="22"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert set(states(result).values()) == {ForwardState.ACTIVE}


def test_a_network_qube_targeted_on_a_port_it_also_forwards_conflicts_on_its_uplink() -> None:
    # sys-firewall's own sshd (outside 2222 -> 22) and work's forward through sys-firewall
    # on outside port 22: packets for sys-firewall:22 would meet the DNAT to work.
    own = external("2222", to="22")
    through = external("22")
    result = plan({"sys-firewall": rules(own), "work": rules(through)}, lab_topology(), NOW, BOOT)
    (kept,) = result.of_target("sys-firewall")
    (lost,) = result.of_target("work")
    assert (kept.state, lost.state) == (ForwardState.ACTIVE, ForwardState.CONFLICT)
    assert lost.reason is not None
    assert lost.reason.startswith("tcp/22 on sys-firewall (uplink eth0, IPv4) is taken by")
    # The other way round (work's forward older), sys-firewall's forward loses.
    order = {lost.forward_id: 0, kept.forward_id: 1}
    swapped = plan(
        {"sys-firewall": rules(own), "work": rules(through)}, lab_topology(), NOW, BOOT, order
    )
    assert swapped.of_target("sys-firewall")[0].state == ForwardState.CONFLICT
    # Its downstream side is another side: an internal forward there on 22 is free.
    inner = plan(
        {"sys-firewall": rules(own), "work": rules(internal("22", "personal"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert set(states(inner).values()) == {ForwardState.ACTIVE}


def test_a_dnat_meets_the_union_of_a_network_qubes_accepts_naming_the_first_holder() -> None:
    own = rules(external("2020-2030", to="20-30"), external("3025-3040", to="25-40"))
    first, second = plan({"sys-firewall": own}, lab_topology(), NOW, BOOT).forwards
    assert first.active and second.active  # overlapping accepts of one target: a union
    for port, holder in (("19", None), ("20", first), ("30", first), ("35", second),
                         ("41", None)):  # fmt: skip
        result = plan(
            {"sys-firewall": own, "work": rules(external(port))}, lab_topology(), NOW, BOOT
        )
        (through,) = result.of_target("work")
        assert through.conflict_with == (holder.forward_id if holder else None), port


def test_the_same_outside_port_to_one_qube_port_twice_still_conflicts() -> None:
    result = plan(
        {
            "work": rules(
                external("80", to="8080"),
                external("80", to="8080", sources="::/0"),
                external("80", to="8080", sources="192.0.2.0/24"),
            )
        },
        lab_topology(ipv6=True),
        NOW,
        BOOT,
    )
    assert states(result) == {
        ("work", 0): ForwardState.ACTIVE,
        ("work", 1): ForwardState.ACTIVE,  # IPv6: another family, another claim
        ("work", 2): ForwardState.CONFLICT,
    }


def test_identical_forwards_of_one_target_conflict() -> None:
    result = plan({"work": rules(external("80"), external("80"))}, lab_topology(), NOW, BOOT)
    first, second = result.forwards
    assert first.forward_id == second.forward_id
    assert (first.state, second.state) == (ForwardState.ACTIVE, ForwardState.CONFLICT)


def test_inactive_forwards_claim_nothing() -> None:
    stale = external("80") + " via=sys-vpn"
    result = plan(
        {"work": rules(stale), "personal": rules(external("80"))}, lab_topology(), NOW, BOOT
    )
    assert states(result) == {
        ("work", 0): ForwardState.INACTIVE,
        ("personal", 0): ForwardState.ACTIVE,
    }


def test_tunnel_keeps_paths_apart_until_a_netvm_change_brings_a_conflict() -> None:
    following = external("80") + " follow=yes"
    both = {"work": rules(external("80")), "vpn-work": rules(following)}
    topology = lab_topology()
    apart = plan(both, topology, NOW, BOOT)
    assert set(states(apart).values()) == {ForwardState.ACTIVE}
    order = {f.forward_id: rank for rank, f in enumerate(apart.forwards)}
    order[apart.of_target("work")[0].forward_id] = -1  # work's forward is the older one
    moved = topology.replace_qube(topology["vpn-work"].with_changes(netvm="sys-firewall"))
    result = plan(both, moved, NOW, BOOT, order=order)
    assert result.of_target("work")[0].state == ForwardState.ACTIVE
    newer = result.of_target("vpn-work")[0]
    assert newer.state == ForwardState.CONFLICT
    assert newer.conflict_with == apart.of_target("work")[0].forward_id


def test_conflicts_for_names_the_existing_forward() -> None:
    existing = {"work": rules("action=accept", external("80"))}
    found = conflicts_for("personal", rules(external("80")), existing, lab_topology(), NOW, BOOT)
    work_id = plan(existing, lab_topology(), NOW, BOOT).forwards[0].forward_id
    assert len(found) == 1
    assert f"taken by forward {work_id} of work" in found[0]


def test_conflicts_for_lets_the_new_forward_lose_even_when_it_sorts_first() -> None:
    # "personal" sorts before "work": without the new-last rank it would win.
    existing = {"work": rules(external("80"))}
    found = conflicts_for("personal", rules(external("80")), existing, lab_topology(), NOW, BOOT)
    assert len(found) == 1 and "of work" in found[0]


def test_conflicts_for_accepts_an_unchanged_or_free_list() -> None:
    existing = {"work": rules(external("80")), "personal": rules(external("81"))}
    topology = lab_topology()
    assert conflicts_for("work", existing["work"], existing, topology, NOW, BOOT) == []
    extended = rules(external("80"), external("82"))
    assert conflicts_for("work", extended, existing, topology, NOW, BOOT) == []


def test_conflicts_for_refuses_a_second_copy_of_an_existing_forward() -> None:
    existing = {"work": rules(external("80"))}
    doubled = rules(external("80"), external("80"))
    found = conflicts_for("work", doubled, existing, lab_topology(), NOW, BOOT)
    assert len(found) == 1 and "of work" in found[0]


def test_conflicts_for_ignores_conflicts_that_already_exist() -> None:
    existing = {"work": rules(external("80"), external("80", to="81"))}
    assert len(plan(existing, lab_topology(), NOW, BOOT).in_state(ForwardState.CONFLICT)) == 1
    same = conflicts_for("work", existing["work"], existing, lab_topology(), NOW, BOOT)
    assert same == []


def test_conflicts_for_accepts_a_second_forward_to_a_port_of_the_same_qube() -> None:
    existing = {"work": rules(external("80", to="8080"))}
    second = rules(external("80", to="8080"), internal("8080", "personal"))
    assert conflicts_for("work", second, existing, lab_topology(), NOW, BOOT) == []
