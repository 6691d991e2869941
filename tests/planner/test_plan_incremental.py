"""Incremental planning gives what a whole plan gives, over random networks and changes."""

import ipaddress
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from planner_strategies import BOOT, NOW, forward_rules, scenarios

from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.model.rule import ForwardRule, ForwardType, Rule, forward_id
from qubes_portfwd.model.topology import Qube, Topology
from qubes_portfwd.planner import ForwardState, conflicts_for, plan
from qubes_portfwd.planner.incremental import Settled, added_conflicts, replan, settle_all

Rules = dict[str, list[Rule]]


def ranked(order: Mapping[str, int], rules: Mapping[str, Sequence[Rule]]) -> dict[str, int]:
    """Ranks as the hosts give them: existing ones kept, new forwards after, in rule order,
    and the ranks of forwards no longer there pruned."""
    present = {forward_id(q, r) for q in rules for r in rules[q] if isinstance(r, ForwardRule)}
    result = {fid: rank for fid, rank in order.items() if fid in present}
    next_rank = max(order.values(), default=-1) + 1
    for qube in sorted(rules):
        for rule in rules[qube]:
            fid = forward_id(qube, rule) if isinstance(rule, ForwardRule) else None
            if fid is not None and fid not in result:
                result[fid], next_rank = next_rank, next_rank + 1
    return result


@st.composite
def changes(draw: st.DrawFn, topology: Topology, rules: Rules) -> tuple[str, list[Rule]]:
    """One qube's new rule list: some rules dropped, some new forwards put anywhere."""
    qube = draw(st.sampled_from(sorted({*rules, *topology.qubes})))
    listed = [r for r in rules.get(qube, []) if draw(st.integers(0, 3))]
    for rule in draw(st.lists(forward_rules(topology, qube), max_size=3)):
        listed.insert(draw(st.integers(0, len(listed))), rule)
    return qube, listed


@settings(deadline=None, max_examples=300)
@given(st.data())
def test_a_chain_of_changes_plans_as_a_whole_plan_does(data: st.DataObject) -> None:
    topology, rules = data.draw(scenarios())
    ids = data.draw(st.permutations(sorted(ranked({}, rules))))
    order = {fid: rank for rank, fid in enumerate(ids)}
    settled: Settled | None = settle_all(rules, topology, NOW, BOOT, order)
    assert settled is not None and settled.plan == plan(rules, topology, NOW, BOOT, order)
    for _ in range(3):
        qube, new_rules = data.draw(changes(topology, rules))
        quick = added_conflicts(settled, qube, new_rules, rules, topology, NOW, BOOT, order)
        if quick is not None:
            assert quick == conflicts_for(qube, new_rules, rules, topology, NOW, BOOT, order)
        rules = {**rules, qube: new_rules}
        order = ranked(order, rules)
        whole = plan(rules, topology, NOW, BOOT, order)
        incremental = replan(settled, rules, topology, NOW, BOOT, order)
        if incremental is not None:
            assert incremental.plan == whole
        settled = incremental or settle_all(rules, topology, NOW, BOOT, order)


def chain() -> Topology:
    return Topology.of(
        Qube("sys-net", 2, provides_network=True),
        Qube("sys-firewall", 3, netvm="sys-net", provides_network=True),
        Qube("work", 10, netvm="sys-firewall"),
        Qube("other", 11, netvm="sys-firewall"),
    )


def forward(port: int, to: int = 80) -> ForwardRule:
    anyone = (ipaddress.IPv4Network("0.0.0.0/0"),)
    return ForwardRule(ForwardType.EXTERNAL, PortRange(port, port), PortRange(to, to), anyone)


def test_adding_and_removing_without_conflicts_is_incremental() -> None:
    topology = chain()
    rules: dict[str, Sequence[Rule]] = {"work": (forward(1), forward(2)), "other": (forward(3),)}
    order = ranked({}, rules)
    settled = settle_all(rules, topology, NOW, BOOT, order)
    for change in ((forward(1), forward(2), forward(4)), (forward(2), forward(4))):
        rules = {**rules, "work": change}
        order = ranked(order, rules)
        quick = replan(settled, rules, topology, NOW, BOOT, order)
        assert quick is not None
        assert quick.plan == plan(rules, topology, NOW, BOOT, order)
        settled = quick
    assert [f.position for f in settled.plan.of_target("work")] == [0, 1]


def test_a_taken_port_is_refused_without_a_whole_plan() -> None:
    topology = chain()
    rules: dict[str, Sequence[Rule]] = {"work": (forward(1),)}
    order = ranked({}, rules)
    settled = settle_all(rules, topology, NOW, BOOT, order)
    found = added_conflicts(settled, "other", [forward(1, 22)], rules, topology, NOW, BOOT, order)
    assert found is not None and len(found) == 1 and "tcp/1 on sys-net" in found[0]


def test_removing_a_port_holder_while_another_waits_for_it_plans_whole() -> None:
    topology = chain()
    rules: dict[str, Sequence[Rule]] = {"work": (forward(1),), "other": (forward(1, 22),)}
    order = ranked(ranked({}, {"work": rules["work"]}), rules)  # work's is older: it holds 1
    settled = settle_all(rules, topology, NOW, BOOT, order)
    assert settled.plan.of_target("other")[0].state == ForwardState.CONFLICT
    assert replan(settled, {**rules, "work": ()}, topology, NOW, BOOT, order) is None


def test_a_netvm_change_or_a_new_boot_plans_whole() -> None:
    topology = chain()
    rules: dict[str, Sequence[Rule]] = {"work": (forward(1),)}
    order = ranked({}, rules)
    settled = settle_all(rules, topology, NOW, BOOT, order)
    assert replan(settled, rules, topology, NOW, BOOT, order) is settled
    moved = topology.replace_qube(topology["work"].with_changes(netvm="sys-net"))
    assert replan(settled, rules, moved, NOW, BOOT, order) is None
    assert replan(settled, rules, topology, NOW, "another boot", order) is None


def test_a_removed_targets_accepts_no_longer_hold_its_port() -> None:
    # sys-firewall is a target (accepts 5 on eth0) and the netvm of work's forward (DNAT of 5
    # arriving on eth0): once its forward is gone, work's may take the port.
    topology = chain()
    rules: dict[str, Sequence[Rule]] = {"sys-firewall": (forward(7, 5),)}
    order = ranked({}, rules)
    settled = settle_all(rules, topology, NOW, BOOT, order)
    for change in ({"sys-firewall": ()}, {"work": (forward(5),)}):
        rules = {**rules, **change}
        order = ranked(order, rules)
        quick = replan(settled, rules, topology, NOW, BOOT, order)
        assert quick is not None and quick.plan == plan(rules, topology, NOW, BOOT, order)
        settled = quick
    assert settled.plan.of_target("work")[0].state == ForwardState.ACTIVE
