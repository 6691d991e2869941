"""Join the plan with what the agents reported into ForwardStatus values (pure; StatusTexts
remembers the last document's texts)."""

from collections.abc import Mapping
from dataclasses import dataclass

from ..model import status_document
from ..model.errors import ValidationError
from ..model.forward_status import (
    PUBLIC_PREFIX,
    REPAIRING,
    ForwardState,
    ForwardStatus,
    HopState,
    HopStatus,
    PublicEndpoint,
    parse_public_entry,
)
from ..model.rule_text import format_rule
from ..planner import ForwardPlan, Plan
from ..planner import ForwardState as PlanState
from .publisher import APPLIED, Snapshot

Outcome = tuple[HopState, str | None]  # a hop's state, and the agent's error if it failed


def hop_outcome(key: str, value: str | None, snapshot: Snapshot | None) -> Outcome:
    """Applied, failed (with the agent's error) or pending, for the planned entry `value`.

    Applied only when the generation published now carries exactly that entry and the
    agent reported that very generation applied: anything else may be ahead of the kernel.
    """
    if snapshot is None or value is None or snapshot.entries.get(key) != value:
        return _PENDING
    status = snapshot.status
    if status.handled != snapshot.generation:
        return _PENDING
    outcome = status.per_key.get(key)
    if outcome == APPLIED:
        return _APPLIED
    if outcome == REPAIRING:
        return _PENDING
    error = outcome or status.error
    if error is None:
        return _PENDING
    return HopState.FAILED, error


_PENDING: Outcome = (HopState.PENDING, None)
_APPLIED: Outcome = (HopState.APPLIED, None)


def public_endpoints(forward_id: str, snapshot: Snapshot | None) -> tuple[PublicEndpoint, ...]:
    """What the edge's lease keeper reported for this forward; malformed reports are dropped."""
    reported: Mapping[str, str] = snapshot.public if snapshot is not None else {}
    if not reported:
        return ()
    prefix = f"{PUBLIC_PREFIX}{forward_id}/"
    found = []
    for untrusted_key, untrusted_value in reported.items():
        if not untrusted_key.startswith(prefix):
            continue
        try:
            _, endpoint = parse_public_entry(untrusted_key, untrusted_value)
        except ValidationError:
            continue  # the qube wrote it: never let it break the listing
        found.append(endpoint)
    return tuple(sorted(found, key=lambda e: (e.proto, e.port)))


def observed(
    forward: ForwardPlan,
    snapshots: Mapping[str, Snapshot],
    planned: Mapping[str, Mapping[str, str]],
) -> tuple[tuple[Outcome, ...], tuple[PublicEndpoint, ...]]:
    """What a forward's status shows of the agents' reports: each hop's outcome and the
    edge's public endpoints (nothing for a forward that is not active)."""
    if forward.state != PlanState.ACTIVE:
        return (), ()
    hops = forward.hops
    outcomes = []
    for hop in hops:
        key, snapshot = hop.key, snapshots.get(hop.qube)
        value = planned.get(hop.qube, _NOTHING).get(key)
        # The usual answer first, in one set lookup (the document asks it of every hop).
        if snapshot is not None and key in snapshot.applied_keys and snapshot.entries[key] == value:
            outcomes.append(_APPLIED)
        else:
            outcomes.append(hop_outcome(key, value, snapshot))
    edge = hops[0].qube if hops and hops[0].role == "edge" else None
    public = public_endpoints(forward.forward_id, snapshots.get(edge)) if edge else ()
    return tuple(outcomes), public


_NOTHING: Mapping[str, str] = {}


def forward_status(
    forward: ForwardPlan,
    snapshots: Mapping[str, Snapshot],
    planned: Mapping[str, Mapping[str, str]],
) -> ForwardStatus:
    """One forward's status from the agents' reports; `planned` is the plan's entries by qube."""
    return _status(forward, *observed(forward, snapshots, planned))


def _status(
    forward: ForwardPlan, outcomes: tuple[Outcome, ...], public: tuple[PublicEndpoint, ...]
) -> ForwardStatus:
    rule_text = format_rule(forward.rule)
    if forward.state != PlanState.ACTIVE:
        hops = tuple(HopStatus(h.qube, str(h.role), HopState.INACTIVE) for h in forward.hops)
        return ForwardStatus(
            forward.forward_id,
            forward.target,
            rule_text,
            forward.family,
            ForwardState(str(forward.state)),
            forward.reason,
            hops,
        )
    hops = tuple(
        HopStatus(h.qube, str(h.role), state, error)
        for h, (state, error) in zip(forward.hops, outcomes, strict=True)
    )
    failed = [h for h in hops if h.state == HopState.FAILED]
    state = ForwardState.FAILED if failed else ForwardState.ACTIVE
    reason = "; ".join(f"{h.qube}: {h.error}" for h in failed) or None
    return ForwardStatus(
        forward.forward_id, forward.target, rule_text, forward.family, state, reason, hops, public
    )


def forward_statuses(
    plan: Plan,
    snapshots: Mapping[str, Snapshot],
    *,
    through: str | None = None,
    target: str | None = None,
) -> list[ForwardStatus]:
    """Every forward (or those through a network qube, or of one target), outer hop first."""
    forwards = plan.forwards
    if through is not None:
        forwards = plan.through(through)
    if target is not None:
        forwards = tuple(f for f in forwards if f.target == target)
    return [forward_status(f, snapshots, plan.entries) for f in forwards]


@dataclass(slots=True)
class _Kept:
    """One forward's text in the status document and what it was made from."""

    forward: ForwardPlan
    outcomes: tuple[Outcome, ...]
    public: tuple[PublicEndpoint, ...]
    text: bytes


class StatusTexts:
    """Every forward's text in the status document, made again only for a forward whose plan
    or hop outcomes changed: one change re-encodes its forward, not all (1,000 forwards
    took ~20 ms to make and encode whole, after every change)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], _Kept] = {}

    def texts(self, plan: Plan, snapshots: Mapping[str, Snapshot]) -> list[bytes]:
        """`forward_text` of each of `forward_statuses(plan, snapshots)`, in its order."""
        before, kept = self._kept, {}
        planned = plan.entries
        texts = []
        for forward in plan.forwards:
            outcomes, public = observed(forward, snapshots, planned)
            key = (forward.forward_id, forward.family)
            last = before.get(key)
            if (
                last is None
                or not _same_status(last.forward, forward)
                or last.outcomes != outcomes
                or last.public != public
            ):
                text = status_document.forward_text(_status(forward, outcomes, public))
                last = _Kept(forward, outcomes, public, text)
            else:
                last.forward = forward  # the plan's own object: nothing else kept alive
            kept[key] = last
            texts.append(last.text)
        self._kept = kept
        return texts


def _same_status(a: ForwardPlan, b: ForwardPlan) -> bool:
    """Everything of a forward's plan its status shows (not its position) is the same."""
    return a is b or (
        a.rule == b.rule
        and a.state == b.state
        and a.reason == b.reason
        and a.hops == b.hops
        and a.target == b.target
    )
