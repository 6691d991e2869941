"""The planner: all rules + topology + time -> each forward's state and each qube's entries.

Pure: no I/O and no clock; `now` and the host's `boot_id` decide which rules have expired.
"""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from ..model.entries import format_hop
from ..model.rule import Action, FilterRule, ForwardRule, QubeName, Rule, forward_id
from ..model.topology import Topology
from .drafts import Draft, draft_forward
from .expiry import is_expired
from .network_facts import NetworkFacts
from .settle import ClaimBook, settle
from .values import ForwardPlan, ForwardState, Plan, freeze_entries

# What Qubes applies to a qube that has no firewall.xml.
DEFAULT_RULES: tuple[Rule, ...] = (FilterRule(Action.ACCEPT),)

Rank = Callable[[Draft | ForwardPlan], tuple[int | str, ...]]


def plan(
    rules: Mapping[QubeName, Sequence[Rule]],
    topology: Topology,
    now: float,
    boot_id: str,
    order: Mapping[str, int] | None = None,
) -> Plan:
    """Plan every live forward; `order` ranks forward ids, lower = older = keeps a contested port.

    Unranked forwards come after, by qube name then rule position; a qube missing from `rules`
    has Qubes' default list."""
    return settled_plan(rules, topology, now, boot_id, rank_by(order or {}))[0]


def conflicts_for(
    qube: QubeName,
    new_rules: Sequence[Rule],
    rules: Mapping[QubeName, Sequence[Rule]],
    topology: Topology,
    now: float,
    boot_id: str,
    order: Mapping[str, int] | None = None,
) -> list[str]:
    """Why `new_rules` cannot be stored for `qube`: each added forward's conflict, naming the
    existing forward it collides with ([] when none). Added forwards rank after every other,
    and so do rebound ones: a forward not active now whose via/follow changes must not take
    a port from a forward that is."""
    old_live = live_forwards(rules_of(rules, qube), now, boot_id)
    live_old = Counter(forward_id(qube, r) for _, r in old_live)
    old_binding = {forward_id(qube, r): (r.via, r.follow) for _, r in old_live}
    new_positions = set()
    rebound: dict[int, str] = {}
    for position, rule in live_forwards(new_rules, now, boot_id):
        ident = forward_id(qube, rule)
        if live_old[ident] > 0:
            live_old[ident] -= 1
            if (rule.via, rule.follow) != old_binding[ident]:
                rebound[position] = ident
        else:
            new_positions.add(position)
    base_rank = rank_by(order or {})
    if rebound:
        current, _ = settled_plan(rules, topology, now, boot_id, base_rank)
        active = {f.forward_id for f in current.of_target(qube) if f.active}
        new_positions |= {p for p, ident in rebound.items() if ident not in active}

    def rank(draft: Draft | ForwardPlan) -> tuple[int | str, ...]:
        is_new = draft.target == qube and draft.position in new_positions
        return (int(is_new), *base_rank(draft))

    proposed, _ = settled_plan({**rules, qube: new_rules}, topology, now, boot_id, rank)
    return conflict_messages(proposed, qube, lambda f: f.position in new_positions)


def conflict_messages(
    proposed: Plan, qube: QubeName, is_added: Callable[[ForwardPlan], bool]
) -> list[str]:
    """Each added forward of `qube` that lost a port in `proposed`, and to which forward."""
    return [
        f"forward {f.forward_id} (IPv{f.family}) conflicts: {f.reason}"
        for f in proposed.of_target(qube)
        if is_added(f) and f.state == ForwardState.CONFLICT
    ]


def rules_of(rules: Mapping[QubeName, Sequence[Rule]], qube: QubeName) -> Sequence[Rule]:
    return rules.get(qube, DEFAULT_RULES)


def rank_by(order: Mapping[str, int]) -> Rank:
    """Oldest first: ranked forwards by rank, then the unranked by target and position."""

    def rank(draft: Draft | ForwardPlan) -> tuple[int | str, ...]:
        ranked = order.get(draft.forward_id)
        tier = (0, ranked) if ranked is not None else (1, 0)
        return (*tier, draft.target, draft.position, draft.family)

    return rank


def live_forwards(rules: Sequence[Rule], now: float, boot_id: str) -> list[tuple[int, ForwardRule]]:
    return [
        (position, rule)
        for position, rule in enumerate(rules)
        if isinstance(rule, ForwardRule) and not is_expired(rule, now, boot_id)
    ]


def settled_plan(
    rules: Mapping[QubeName, Sequence[Rule]],
    topology: Topology,
    now: float,
    boot_id: str,
    rank: Rank,
) -> tuple[Plan, ClaimBook]:
    """The plan, and the ports its active forwards hold (what incremental planning starts from)."""
    facts = NetworkFacts(topology)
    drafts = [
        draft
        for target in sorted(set(rules) | set(topology.qubes))
        for position, rule in live_forwards(rules_of(rules, target), now, boot_id)
        for draft in draft_forward(target, position, rule, facts)
    ]
    book = ClaimBook()
    decided = settle(sorted(drafts, key=rank), book)
    entries: dict[QubeName, dict[str, str]] = {name: {} for name in sorted(topology.qubes)}
    for forward, draft in decided:
        if forward.state == ForwardState.ACTIVE:
            for qube, hop in draft.entries:
                entries[qube][draft.key] = format_hop(hop)
    forwards = sorted((f for f, _ in decided), key=forward_order)
    return Plan(tuple(forwards), freeze_entries(entries)), book


def forward_order(forward: ForwardPlan) -> tuple[str, int, int]:
    """How `Plan.forwards` is sorted."""
    return (forward.target, forward.position, forward.family)
