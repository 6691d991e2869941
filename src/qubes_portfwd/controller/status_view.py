"""Join the plan with what the agents reported into ForwardStatus values (pure)."""

from collections.abc import Mapping

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


def hop_status(
    qube: str, role: str, key: str, value: str | None, snapshot: Snapshot | None
) -> HopStatus:
    """Applied, failed (with the agent's error) or pending, for the planned entry `value`.

    Applied only when the generation published now carries exactly that entry and the
    agent reported that very generation applied: anything else may be ahead of the kernel.
    """
    if snapshot is None or value is None or snapshot.entries.get(key) != value:
        return HopStatus(qube, role, HopState.PENDING)
    status = snapshot.status
    if status.handled != snapshot.generation:
        return HopStatus(qube, role, HopState.PENDING)
    outcome = status.per_key.get(key)
    if outcome == APPLIED:
        return HopStatus(qube, role, HopState.APPLIED)
    if outcome == REPAIRING:
        return HopStatus(qube, role, HopState.PENDING)
    error = outcome or status.error
    if error is None:
        return HopStatus(qube, role, HopState.PENDING)
    return HopStatus(qube, role, HopState.FAILED, error)


def public_endpoints(forward_id: str, snapshot: Snapshot | None) -> tuple[PublicEndpoint, ...]:
    """What the edge's lease keeper reported for this forward; malformed reports are dropped."""
    reported: Mapping[str, str] = snapshot.public if snapshot is not None else {}
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


def forward_status(
    forward: ForwardPlan,
    snapshots: Mapping[str, Snapshot],
    planned: Mapping[str, Mapping[str, str]],
) -> ForwardStatus:
    """One forward's status from the agents' reports; `planned` is the plan's entries by qube."""
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
        hop_status(
            h.qube, str(h.role), h.key, planned.get(h.qube, {}).get(h.key), snapshots.get(h.qube)
        )
        for h in forward.hops
    )
    failed = [h for h in hops if h.state == HopState.FAILED]
    state = ForwardState.FAILED if failed else ForwardState.ACTIVE
    reason = "; ".join(f"{h.qube}: {h.error}" for h in failed) or None
    edge = hops[0] if hops and hops[0].role == "edge" else None
    public = public_endpoints(forward.forward_id, snapshots.get(edge.qube)) if edge else ()
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
