"""Properties of the planner over random networks and random forwards."""

import random
from collections import defaultdict
from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st
from planner_strategies import BOOT, NOW, scenarios

from qubes_portfwd.model.entries import FORWARD_PREFIX, AcceptHop, DnatHop, Hop, parse_hop
from qubes_portfwd.model.rule import ForwardRule, ForwardType, Rule
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.planner import ForwardState, HopRole, Plan, conflicts_for, plan

Scenario = tuple[Topology, dict[str, list[Rule]]]


def expected_path(topology: Topology, target: str, forwardtype: ForwardType) -> list[str]:
    """Walked here independently: netvms up to the first netvm-less or tunnel qube."""
    chain: list[str] = []
    current = topology[target]
    while current.netvm is not None and current.netvm in topology:
        current = topology[current.netvm]
        chain.append(current.name)
        if current.is_tunnel or forwardtype == ForwardType.INTERNAL or len(chain) > 10:
            break
    return chain


def side_of(hop: Hop) -> str:
    """Where a hop listens: a DNAT on its inbound side, a target on its uplink (eth0)."""
    return hop.inbound if isinstance(hop, DnatHop) else "eth0"


def forward_hops(result: Plan) -> dict[str, list[tuple[str, Hop]]]:
    """Every forward entry of every qube, read back through the agent's parser, by key."""
    found: dict[str, list[tuple[str, Hop]]] = defaultdict(list)
    for qube, entries in result.entries.items():
        for key, value in entries.items():
            if key.startswith(FORWARD_PREFIX):
                found[key].append((qube, parse_hop(key, value)))
    return found


@settings(deadline=None)
@given(scenarios())
def test_entries_only_on_qubes_of_the_forwards_path(scenario: Scenario) -> None:
    topology, rules = scenario
    result = plan(rules, topology, NOW, BOOT)
    active = {f"{FORWARD_PREFIX}{f.forward_id}/{f.family}": f for f in result.forwards if f.active}
    for key, hops in forward_hops(result).items():
        forward = active[key]
        allowed = {
            forward.target,
            *expected_path(topology, forward.target, forward.rule.forwardtype),
        }
        assert {qube for qube, _ in hops} <= allowed


@settings(deadline=None)
@given(scenarios())
def test_no_two_active_forwards_claim_the_same_port_on_one_side_of_a_qube(
    scenario: Scenario,
) -> None:
    topology, rules = scenario
    result = plan(rules, topology, NOW, BOOT)
    claims = defaultdict(list)
    for key, hops in forward_hops(result).items():
        for qube, hop in hops:
            for proto in hop.protos:
                claims[(qube, side_of(hop), hop.family, proto)].append((key, hop))
    for held in claims.values():
        for (key_a, hop_a), (key_b, hop_b) in combinations(held, 2):
            both_accept = isinstance(hop_a, AcceptHop) and isinstance(hop_b, AcceptHop)
            # Accepts of one target are a union: only a DNAT excludes.
            assert key_a == key_b or both_accept or not hop_a.ports.overlaps(hop_b.ports)


@settings(deadline=None)
@given(scenarios())
def test_a_forward_loses_only_to_a_dnat_on_the_same_side(scenario: Scenario) -> None:
    topology, rules = scenario
    result = plan(rules, topology, NOW, BOOT)
    held = [(qube, hop) for hops in forward_hops(result).values() for qube, hop in hops]
    for forward in result.in_state(ForwardState.CONFLICT):
        alone = plan({forward.target: [forward.rule]}, topology, NOW, BOOT)
        wanted = [
            (qube, hop)
            for key, hops in forward_hops(alone).items()
            if key.endswith(f"/{forward.family}")
            for qube, hop in hops
        ]
        assert wanted, "alone, a losing forward would run"
        assert any(
            qube == other_qube
            and side_of(hop) == side_of(other)
            and not (isinstance(hop, AcceptHop) and isinstance(other, AcceptHop))
            and set(hop.protos) & set(other.protos)
            and hop.ports.overlaps(other.ports)
            for qube, hop in wanted
            for other_qube, other in held
        ), forward.reason


@settings(deadline=None)
@given(scenarios())
def test_every_active_forward_has_its_entry_on_every_hop(scenario: Scenario) -> None:
    topology, rules = scenario
    result = plan(rules, topology, NOW, BOOT)
    for forward in result.forwards:
        assert forward.hops[-1:] == () or forward.hops[-1].qube == forward.target
        if not forward.active:
            assert forward.reason
            continue
        assert forward.reason is None
        expected = expected_path(topology, forward.target, forward.rule.forwardtype)
        assert list(forward.network_qubes) == expected[::-1]
        for hop in forward.hops:
            entry = parse_hop(hop.key, result.entries[hop.qube][hop.key])
            wanted = AcceptHop if hop.role == HopRole.TARGET else DnatHop
            assert isinstance(entry, wanted)


@settings(deadline=None)
@given(scenarios())
def test_losers_name_an_active_forward_and_expired_rules_are_absent(scenario: Scenario) -> None:
    topology, rules = scenario
    result = plan(rules, topology, NOW, BOOT)
    active_ids = {f.forward_id for f in result.forwards if f.active}
    for forward in result.in_state(ForwardState.CONFLICT):
        assert forward.conflict_with in active_ids
        assert forward.reason is not None and forward.conflict_with in forward.reason
    for forward in result.forwards:
        expire = forward.rule.expire
        assert expire is None or not expire.expired(NOW, BOOT)
    live = sum(
        1
        for listed in rules.values()
        for rule in listed
        if isinstance(rule, ForwardRule)
        and (rule.expire is None or not rule.expire.expired(NOW, BOOT))
    )
    assert len({(f.target, f.position) for f in result.forwards}) == live


@settings(deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_plan_is_deterministic(scenario: Scenario, shuffler: random.Random) -> None:
    topology, rules = scenario
    first = plan(rules, topology, NOW, BOOT)
    shuffled_rules = dict(shuffler.sample(sorted(rules.items()), len(rules)))
    qubes = shuffler.sample(
        sorted(topology.qubes.values(), key=lambda q: q.name), len(topology.qubes)
    )
    second = plan(shuffled_rules, Topology.of(*qubes), NOW, BOOT)
    assert first.forwards == second.forwards
    assert [(q, list(e.items())) for q, e in first.entries.items()] == [
        (q, list(e.items())) for q, e in second.entries.items()
    ]


@settings(deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_order_decides_only_who_wins_never_the_safety(
    scenario: Scenario, shuffler: random.Random
) -> None:
    topology, rules = scenario
    ids = sorted({f.forward_id for f in plan(rules, topology, NOW, BOOT).forwards})
    order = {ident: rank for rank, ident in enumerate(shuffler.sample(ids, len(ids)))}
    result = plan(rules, topology, NOW, BOOT, order=order)
    for forward in result.in_state(ForwardState.CONFLICT):
        assert forward.conflict_with is not None
        winner_rank = order[forward.conflict_with]
        assert winner_rank < order[forward.forward_id] or (winner_rank == order[forward.forward_id])


@settings(deadline=None)
@given(scenarios(), st.data())
def test_a_list_conflicts_for_accepts_never_displaces_an_active_forward(
    scenario: Scenario, data: st.DataObject
) -> None:
    topology, rules = scenario
    if not rules:
        return
    qube = data.draw(st.sampled_from(sorted(rules)))
    kept = data.draw(st.integers(0, len(rules[qube])))
    existing = {**rules, qube: rules[qube][:kept]}
    if conflicts_for(qube, rules[qube], existing, topology, NOW, BOOT):
        return
    before = plan(existing, topology, NOW, BOOT)
    older_first = {}
    for forward in before.forwards:
        older_first.setdefault(forward.forward_id, len(older_first))
    after = plan(rules, topology, NOW, BOOT, order=older_first)

    def where(result: Plan, state: ForwardState) -> set[tuple[str, int, int]]:
        return {(f.target, f.position, f.family) for f in result.in_state(state)}

    assert where(after, ForwardState.CONFLICT) <= where(before, ForwardState.CONFLICT)
    assert where(before, ForwardState.ACTIVE) <= where(after, ForwardState.ACTIVE)
