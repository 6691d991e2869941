"""Conflicts: which forward keeps a contested (qube, family, proto, port), and why others lose.

Every planned hop claims its ports on its qube: DNAT hops their `ports`, the target its
accepted `ports`. One namespace per qube and family, whatever the interface: a DNAT for
packets to the qube itself and the qube's own input on that port cannot both win.
"""

from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass

from ..model.entries import Hop
from ..model.ports import PortRange
from ..model.rule import QubeName
from ..model.rule_text import format_rule
from .drafts import Draft
from .values import ForwardPlan, ForwardState


@dataclass(frozen=True, order=True)
class Claim:
    qube: QubeName
    family: int
    proto: str
    ports: PortRange


def claims_of(entries: Iterable[tuple[QubeName, Hop]]) -> tuple[Claim, ...]:
    return tuple(
        sorted(
            Claim(qube, hop.family, proto, hop.ports)
            for qube, hop in entries
            for proto in hop.protos
        )
    )


@dataclass(frozen=True)
class _Held:
    first: int
    last: int
    holder: Draft


def _start(held: _Held) -> int:
    return held.first


class ClaimBook:
    """The ports taken so far, one sorted list of disjoint ranges per (qube, family, proto)."""

    # Held ranges never overlap, so the only range that can overlap a claim is the last one
    # starting at or before the claim's end: a lookup is a bisection, not a walk.

    def __init__(self) -> None:
        self._held: dict[tuple[QubeName, int, str], list[_Held]] = {}

    def holder_of(self, claim: Claim) -> tuple[Draft, PortRange] | None:
        """The forward already holding part of `claim`, with the overlapping ports."""
        held = self._held.get((claim.qube, claim.family, claim.proto), [])
        index = bisect_right(held, claim.ports.last, key=_start) - 1
        if index < 0 or held[index].last < claim.ports.first:
            return None
        overlap = PortRange(
            max(held[index].first, claim.ports.first), min(held[index].last, claim.ports.last)
        )
        return held[index].holder, overlap

    def take(self, claims: Iterable[Claim], holder: Draft) -> None:
        for claim in claims:
            held = self._held.setdefault((claim.qube, claim.family, claim.proto), [])
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
    return (
        f"{claim.proto}/{overlap.short} on {claim.qube} (IPv{claim.family}) is taken by "
        f"forward {holder.forward_id} of {holder.target}: {format_rule(holder.rule)}"
    )
