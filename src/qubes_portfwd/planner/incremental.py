"""Incremental planning (pure): one qube's rules changed, the rest of the last plan holds.

Settling is greedy in rank order, so forwards ranked after every planned one cannot change a
decision taken before them: they are settled alone against the ports the last plan's active
forwards hold. Removing an active forward frees its ports; that changes nothing else unless
some forward lost a port to a conflict. Everything else (a netvm, an address, the boot, an
expiry, a rank, a conflict that a removal might resolve) gets a whole plan again.
"""

import dataclasses
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from ..model.entries import format_hop
from ..model.rule import ForwardRule, QubeName, Rule
from ..model.topology import Topology
from .drafts import Draft, draft_forward
from .expiry import next_expiry
from .network_facts import NetworkFacts, NetworkView, network_view
from .plan import (
    Rank,
    conflict_messages,
    forward_order,
    live_forwards,
    rank_by,
    rules_of,
    settled_plan,
)
from .settle import Claim, ClaimBook, Where, accept_claims, claims_of, decide
from .values import ForwardPlan, ForwardState, Plan, freeze_entries

Rules = Mapping[QubeName, Sequence[Rule]]


@dataclass(frozen=True)
class _Inputs:
    """What a plan is made of."""

    rules: Rules
    topology: Topology
    now: float
    boot_id: str
    order: Mapping[str, int]


@dataclass(frozen=True)
class Settled:
    """A plan with all it was made from, and the ports its active forwards hold."""

    plan: Plan
    book: ClaimBook
    rules: Rules
    network: NetworkView
    boot_id: str
    # The first expiry after planning: until then the plan holds as far as time goes.
    valid_until: float | None
    ranks: Mapping[str, int]  # every planned forward's rank, when `all_ranked`
    all_ranked: bool

    @property
    def newest_rank(self) -> int:
        return max(self.ranks.values(), default=-1)

    @property
    def conflicted(self) -> bool:
        return any(f.state == ForwardState.CONFLICT for f in self.plan.forwards)


def settle_all(
    rules: Rules, topology: Topology, now: float, boot_id: str, order: Mapping[str, int]
) -> Settled:
    """The whole plan (what `plan()` returns), kept for the changes that follow."""
    plan, book = settled_plan(rules, topology, now, boot_id, rank_by(order))
    return _settled(plan, book, _Inputs(rules, topology, now, boot_id, order))


def replan(
    settled: Settled,
    rules: Rules,
    topology: Topology,
    now: float,
    boot_id: str,
    order: Mapping[str, int],
) -> Settled | None:
    """`plan(rules, …)` from `settled` when at most one qube's rules changed and the change
    allows it; None when a whole plan is needed."""
    inputs = _Inputs(rules, topology, now, boot_id, order)
    if not _still_holds(settled, inputs):
        return None
    changed = [q for q in set(rules) | set(settled.rules) if _differ(rules, settled.rules, q)]
    if not changed:
        return settled if _ranks_hold(settled, None, order) else None
    if len(changed) > 1:
        return None

    def ranked_last(drafts: Sequence[Draft]) -> bool:
        newest = settled.newest_rank
        return all(order.get(d.forward_id, -1) > newest for d in drafts)

    found = _changed_qube(settled, changed[0], rules_of(rules, changed[0]), inputs)
    if found is None or not ranked_last(found.added) or not _ranks_hold(settled, found, order):
        return None
    return _apply(settled, found, inputs)


def added_conflicts(
    settled: Settled,
    qube: QubeName,
    new_rules: Sequence[Rule],
    rules: Rules,
    topology: Topology,
    now: float,
    boot_id: str,
    order: Mapping[str, int],
) -> list[str] | None:
    """`conflicts_for(qube, new_rules, rules, …)` from `settled` (added forwards rank after
    every other); None when it cannot tell without a whole plan."""
    inputs = _Inputs(rules, topology, now, boot_id, order)
    if not _still_holds(settled, inputs):
        return None
    if any(_differ(rules, settled.rules, q) for q in set(rules) | set(settled.rules)):
        return None
    found = _changed_qube(settled, qube, new_rules, inputs)
    if found is None or not _ranks_hold(settled, found, order):
        return None
    # Added forwards rank after every planned one, among themselves as `order` has them.
    proposed = _apply(settled, found, dataclasses.replace(inputs, rules={**rules, qube: new_rules}))
    added = {(d.forward_id, d.family) for d in found.added}
    return conflict_messages(proposed.plan, qube, lambda f: (f.forward_id, f.family) in added)


@dataclass(frozen=True)
class _QubeChange:
    qube: QubeName
    kept: tuple[ForwardPlan, ...]  # at their new positions
    removed: tuple[ForwardPlan, ...]
    added: tuple[Draft, ...]
    facts: NetworkFacts


def _still_holds(settled: Settled, inputs: _Inputs) -> bool:
    """Whether the boot, time and network are as the settled plan saw them (ranks and rules
    are compared once the change is known)."""
    return (
        settled.all_ranked
        and inputs.boot_id == settled.boot_id
        and (settled.valid_until is None or inputs.now < settled.valid_until)
        and network_view(inputs.topology) == settled.network
    )


def _ranks_hold(settled: Settled, change: "_QubeChange | None", order: Mapping[str, int]) -> bool:
    """Whether every planned forward still there keeps its rank (a removed one may lose it)."""
    removed = set() if change is None else {f.forward_id for f in change.removed}
    return all(order.get(fid) == rank for fid, rank in settled.ranks.items() if fid not in removed)


def _differ(rules: Rules, other: Rules, qube: QubeName) -> bool:
    mine, theirs = rules_of(rules, qube), rules_of(other, qube)
    return mine is not theirs and tuple(mine) != tuple(theirs)


def _changed_qube(
    settled: Settled, qube: QubeName, new_rules: Sequence[Rule], inputs: _Inputs
) -> _QubeChange | None:
    """`qube`'s forwards kept (maybe moved), removed and added; None when a removal could
    hand a port over or the same forward shows up twice."""
    planned = settled.plan.of_target(qube)
    if _repeats(planned):
        return None  # the same forward twice (maybe bound to other paths): a whole plan
    old: dict[ForwardRule, list[ForwardPlan]] = {}
    for forward in planned:
        old.setdefault(forward.rule, []).append(forward)
    kept: list[ForwardPlan] = []
    new: list[tuple[int, ForwardRule]] = []
    for position, rule in live_forwards(new_rules, inputs.now, inputs.boot_id):
        plans = old.pop(rule, None)
        if plans is None:
            new.append((position, rule))
        else:
            kept += [dataclasses.replace(f, position=position) for f in plans]
    removed = tuple(f for plans in old.values() for f in plans)
    if settled.conflicted and any(f.active for f in removed):
        return None
    facts = NetworkFacts(inputs.topology)
    added = tuple(d for position, rule in new for d in draft_forward(qube, position, rule, facts))
    planned_ids = {f.forward_id for f in planned}
    if _repeats(added) or any(d.forward_id in planned_ids for d in added):
        return None  # an id comes back with another rule: its rank is not a new one
    return _QubeChange(qube, tuple(kept), removed, added, facts)


def _repeats(forwards: Sequence[ForwardPlan | Draft]) -> bool:
    return len({(f.forward_id, f.family) for f in forwards}) != len(forwards)


def _apply(settled: Settled, change: _QubeChange, inputs: _Inputs) -> Settled:
    rank = rank_by(inputs.order)
    book = settled.book.copy()
    entries = _EntriesChange(settled.plan.entries)
    gone = [f for f in change.removed if f.active]
    for forward in gone:
        draft = _draft_of(forward, change.facts)
        book.release(claims_of(draft.entries), forward)
        entries.remove(draft)
    if gone:
        # Before the added forwards are decided: they meet the unions without the removed.
        _rebuild_accepts(book, gone, change.kept, rank)
    added = sorted(change.added, key=rank)
    decided = [decide(draft, book) for draft in added]
    for forward, draft in zip(decided, added, strict=True):
        if forward.active:
            entries.add(draft)
    mine = sorted([*change.kept, *decided], key=forward_order)
    forwards = settled.plan.forwards
    start = bisect_left(forwards, change.qube, key=_target)
    end = bisect_right(forwards, change.qube, key=_target)
    plan = Plan((*forwards[:start], *mine, *forwards[end:]), entries.frozen())
    return _settled(plan, book, inputs)


def _target(forward: ForwardPlan) -> QubeName:
    return forward.target


class _EntriesChange:
    """A plan's entries with some added and removed: only the qubes touched are copied."""

    def __init__(self, entries: Mapping[QubeName, Mapping[str, str]]) -> None:
        self._before = entries
        self._touched: dict[QubeName, dict[str, str]] = {}

    def _of(self, qube: QubeName) -> dict[str, str]:
        if qube not in self._touched:
            self._touched[qube] = dict(self._before[qube])
        return self._touched[qube]

    def remove(self, draft: Draft) -> None:
        for qube, _ in draft.entries:
            del self._of(qube)[draft.key]

    def add(self, draft: Draft) -> None:
        for qube, hop in draft.entries:
            self._of(qube)[draft.key] = format_hop(hop)

    def frozen(self) -> Mapping[QubeName, Mapping[str, str]]:
        changed = freeze_entries(self._touched)
        return MappingProxyType({q: changed.get(q, e) for q, e in self._before.items()})


def _draft_of(forward: ForwardPlan, facts: NetworkFacts) -> Draft:
    """The draft a planned forward was decided from (the same network gives the same one)."""
    drafts = draft_forward(forward.target, forward.position, forward.rule, facts)
    return next(d for d in drafts if d.family == forward.family)


def _rebuild_accepts(
    book: ClaimBook, gone: Sequence[ForwardPlan], kept: Sequence[ForwardPlan], rank: Rank
) -> None:
    """The accept unions the removed forwards were in, again from the active ones kept."""
    wheres = {(c.qube, c.side, c.family, c.proto) for f in gone for c in accept_claims(f)}
    holders: dict[Where, list[tuple[Claim, ForwardPlan]]] = {where: [] for where in wheres}
    for forward in sorted((f for f in kept if f.active), key=rank):
        for claim in accept_claims(forward):
            where = (claim.qube, claim.side, claim.family, claim.proto)
            if where in holders:
                holders[where].append((claim, forward))
    for where, held in holders.items():
        book.rebuild_accepts(where, held)


def _settled(plan: Plan, book: ClaimBook, inputs: _Inputs) -> Settled:
    ranks = {f.forward_id: inputs.order.get(f.forward_id) for f in plan.forwards}
    return Settled(
        plan,
        book,
        {qube: tuple(listed) for qube, listed in inputs.rules.items()},
        network_view(inputs.topology),
        inputs.boot_id,
        next_expiry(inputs.rules, inputs.now),
        {fid: rank for fid, rank in ranks.items() if rank is not None},
        None not in ranks.values(),
    )
