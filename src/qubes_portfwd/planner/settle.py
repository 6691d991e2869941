"""Conflicts: which forward keeps a contested listening port, and why others lose.

A claim is one listening (family, proto, port) on one side of one network qube: the uplink
interface a DNAT hop enters by (an edge's outside, a middle hop's eth0, both keyed by the
outside port) or the downstream side (internal forwards). The target claims nothing: it
only accepts, and its accepts are the union of every forward leading to it (DESIGN.md §3).
"""

from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass

from ..model.entries import DOWNSTREAM, DnatHop, Hop
from ..model.ports import PortRange
from ..model.rule import QubeName
from ..model.rule_text import format_rule
from .drafts import Draft
from .values import ForwardPlan, ForwardState


@dataclass(frozen=True, order=True)
class Claim:
    """Ports listened on at one side of a qube: an uplink interface or `downstream`."""

    qube: QubeName
    side: str
    family: int
    proto: str
    ports: PortRange


def claims_of(entries: Iterable[tuple[QubeName, Hop]]) -> tuple[Claim, ...]:
    """The DNAT hops' claims, outside in (a conflict names the outermost side it meets)."""
    return tuple(
        Claim(qube, hop.inbound, hop.family, proto, hop.ports)
        for qube, hop in entries
        if isinstance(hop, DnatHop)
        for proto in hop.protos
    )


@dataclass(frozen=True)
class _Held:
    first: int
    last: int
    holder: Draft


def _start(held: _Held) -> int:
    return held.first


def _where(claim: Claim) -> tuple[QubeName, str, int, str]:
    return (claim.qube, claim.side, claim.family, claim.proto)


class ClaimBook:
    """The ports taken so far: one sorted list of disjoint ranges per qube, side, family, proto."""

    # Held ranges never overlap, so the only range that can overlap a claim is the last one
    # starting at or before the claim's end: a lookup is a bisection, not a walk.

    def __init__(self) -> None:
        self._held: dict[tuple[QubeName, str, int, str], list[_Held]] = {}

    def holder_of(self, claim: Claim) -> tuple[Draft, PortRange] | None:
        """The forward already holding part of `claim`, with the overlapping ports."""
        held = self._held.get(_where(claim), [])
        index = bisect_right(held, claim.ports.last, key=_start) - 1
        if index < 0 or held[index].last < claim.ports.first:
            return None
        overlap = PortRange(
            max(held[index].first, claim.ports.first), min(held[index].last, claim.ports.last)
        )
        return held[index].holder, overlap

    def take(self, claims: Iterable[Claim], holder: Draft) -> None:
        for claim in claims:
            held = self._held.setdefault(_where(claim), [])
            insort(held, _Held(claim.ports.first, claim.ports.last, holder), key=_start)


def settle(drafts_oldest_first: Iterable[Draft]) -> list[tuple[ForwardPlan, Draft]]:
    """Decide each draft's state; an earlier draft keeps what it claims, later ones lose it."""
    book = ClaimBook()
    decided = []
    for draft in drafts_oldest_first:
        state, reason, conflict_with = ForwardState.ACTIVE, draft.reason, None
        if reason is not None:
            state = ForwardState.INACTIVE
        else:
            claims = claims_of(draft.entries)
            contested = next(
                ((c, found) for c in claims if (found := book.holder_of(c)) is not None), None
            )
            if contested is None:
                book.take(claims, draft)
            else:
                claim, (holder, overlap) = contested
                state, conflict_with = ForwardState.CONFLICT, holder.forward_id
                reason = conflict_reason(claim, overlap, holder)
        plan = ForwardPlan(
            draft.forward_id,
            draft.target,
            draft.position,
            draft.rule,
            draft.family,
            state,
            reason,
            draft.hops,
            conflict_with,
        )
        decided.append((plan, draft))
    return decided


def conflict_reason(claim: Claim, overlap: PortRange, holder: Draft) -> str:
    """Names the forward that keeps the port: its id, target and rule."""
    side = "downstream side" if claim.side == DOWNSTREAM else f"uplink {claim.side}"
    return (
        f"{claim.proto}/{overlap.short} on {claim.qube} ({side}, IPv{claim.family}) is taken "
        f"by forward {holder.forward_id} of {holder.target}: {format_rule(holder.rule)}"
    )
