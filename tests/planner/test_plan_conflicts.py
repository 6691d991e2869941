"""Conflicts: who keeps a contested port, the loser's reason, and checking a proposed list."""

from planner_lab import BOOT, NOW, forward_keys, lab_topology, rules

from qubes_portfwd.planner import ForwardState, Plan, conflicts_for, plan


def external(ports: str, *, proto: str = "tcp", to: str = "", sources: str = "0.0.0.0/0") -> str:
    dst = f" dstports={to}" if to else ""
    return (
        f"action=forward forwardtype=external proto={proto} srcports={ports}{dst} srchost={sources}"
    )


def internal(ports: str, sources: str, *, proto: str = "tcp") -> str:
    return f"action=forward forwardtype=internal proto={proto} srcports={ports} srchost={sources}"


def states(result: Plan) -> dict[tuple[str, int], ForwardState]:
    return {(f.target, f.position): f.state for f in result.forwards}


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
        f"tcp/80 on sys-firewall (IPv4) is taken by forward {kept.forward_id} of personal: "
        "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=80-80 "
        "srchost=0.0.0.0/0"
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
    assert lost.reason is not None and lost.reason.startswith("tcp/85 on sys-firewall")


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


def test_internal_and_external_on_the_same_netvm_port_conflict() -> None:
    result = plan(
        {"work": rules(external("8080")), "personal": rules(internal("8080", "work"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    (lost,) = result.in_state(ForwardState.CONFLICT)
    assert lost.target == "work"
    assert lost.reason is not None and "tcp/8080 on sys-firewall" in lost.reason


def test_same_target_port_from_two_forwards_conflicts() -> None:
    result = plan(
        {"work": rules(external("80", to="8080"), external("81", to="8080"))},
        lab_topology(),
        NOW,
        BOOT,
    )
    assert states(result) == {("work", 0): ForwardState.ACTIVE, ("work", 1): ForwardState.CONFLICT}
    lost = result.of_target("work")[1]
    assert lost.reason is not None and lost.reason.startswith("tcp/8080 on work (IPv4)")


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
