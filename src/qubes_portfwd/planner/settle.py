"""Conflicts: which forward keeps a contested listening port, and why others lose.

A claim is one listening (family, proto, port) on one side of one qube: the uplink
interface a DNAT hop enters by (an edge's outside, a middle hop's eth0, both keyed by the
outside port) or the downstream side (internal forwards). A target's accepts do not claim
a port against each other: its accepts are the union of every forward leading to it
(DESIGN.md §3). They only keep a DNAT of that same qube (a network qube can be a target
too) off the port on the side they arrive by, where the DNAT would take their packets.
"""

from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass

from ..model.entries import DOWNSTREAM, DnatHop, Hop
from ..model.ports import PortRange
from ..model.rule import QubeName
from ..model.rule_text import format_rule
from .drafts import UPSTREAM_INTERFACE, Draft
from .values import ForwardPlan, ForwardState

Where = tuple[QubeName, str, int, str]  # qube, side, family, proto


@dataclass(frozen=True, order=True, slots=True)
class Claim:
    """Ports listened on at one side of a qube: an uplink interface or `downstream`.

    `shared` claims (a target's accepts) exclude DNATs only, not each other."""

    qube: QubeName
    side: str
    family: int
    proto: str
    ports: PortRange
    shared: bool = False


def accept_claims(forward: ForwardPlan) -> tuple[Claim, ...]:
    """What an active forward's target accepts, worked out from its plan (no draft needed)."""
    target = forward.target
    return tuple(
        Claim(target, UPSTREAM_INTERFACE, forward.family, proto, forward.rule.dstports, shared=True)
        for proto in forward.rule.protos
    )


def claims_of(entries: Iterable[tuple[QubeName, Hop]]) -> tuple[Claim, ...]:
    """The hops' claims, outside in (a conflict names the outermost side it meets)."""
    return tuple(
        Claim(qube, hop.inbound, hop.family, proto, hop.ports)
        if isinstance(hop, DnatHop)
        # A forward reaches its target from the target's netvm: by its uplink.
        else Claim(qube, UPSTREAM_INTERFACE, hop.family, proto, hop.ports, shared=True)
        for qube, hop in entries
        for proto in hop.protos
    )


@dataclass(frozen=True, slots=True)
class _Held:
    first: int
    last: int
    holder: ForwardPlan


def _start(held: _Held) -> int:
    return held.first


def _where(claim: Claim) -> Where:
    return (claim.qube, claim.side, claim.family, claim.proto)


def _holder_in(held: list[_Held], ports: PortRange) -> tuple[ForwardPlan, PortRange] | None:
    """Held ranges never overlap, so the only range that can overlap `ports` is the last one
    starting at or before its end: a lookup is a bisection, not a walk."""
    index = bisect_right(held, ports.last, key=_start) - 1
    if index < 0 or held[index].last < ports.first:
        return None
    overlap = PortRange(max(held[index].first, ports.first), min(held[index].last, ports.last))
    return held[index].holder, overlap


def _cover(held: list[_Held], ports: PortRange, holder: ForwardPlan) -> None:
    """Add the parts of `ports` not held yet (by `holder`): the list stays disjoint."""
    index = max(bisect_right(held, ports.first, key=_start) - 1, 0)
    gaps, start = [], ports.first
    for piece in held[index:]:
        if piece.first > ports.last:
            break
        if piece.last < start:
            continue
        if piece.first > start:
            gaps.append(_Held(start, piece.first - 1, holder))
        start = piece.last + 1
    if start <= ports.last:
        gaps.append(_Held(start, ports.last, holder))
    for gap in gaps:
        insort(held, gap, key=_start)


class ClaimBook:
    """The ports taken so far, per qube, side, family and proto: the DNATs' ranges and the
    accepts' union, each a sorted list of disjoint ranges.

    `copy()` shares every list; a copy changes a list only after copying it, so a book an
    earlier plan settled stays as it was (incremental planning starts from it)."""

    def __init__(self) -> None:
        self._dnats: dict[Where, list[_Held]] = {}
        self._accepts: dict[Where, list[_Held]] = {}
        self._own: set[tuple[bool, Where]] = set()  # lists this book may change in place

    def copy(self) -> "ClaimBook":
        twin = ClaimBook()
        twin._dnats, twin._accepts = dict(self._dnats), dict(self._accepts)
        return twin

    def holder_of(self, claim: Claim) -> tuple[ForwardPlan, PortRange] | None:
        """The forward already holding part of `claim`, with the overlapping ports."""
        found = _holder_in(self._dnats.get(_where(claim), []), claim.ports)
        if found is None and not claim.shared:
            found = _holder_in(self._accepts.get(_where(claim), []), claim.ports)
        return found

    def take(self, claims: Iterable[Claim], holder: ForwardPlan) -> None:
        for claim in claims:
            if claim.shared:
                _cover(self._writable(True, _where(claim)), claim.ports, holder)
            else:
                held = self._writable(False, _where(claim))
                insort(held, _Held(claim.ports.first, claim.ports.last, holder), key=_start)

    def release(self, claims: Iterable[Claim], holder: ForwardPlan) -> None:
        """Give back the DNAT ranges `holder` took (a shared union is rebuilt instead, see
        `rebuild_accepts`: other forwards may hold the same ports in it)."""
        for claim in claims:
            if claim.shared:
                continue
            held = self._writable(False, _where(claim))
            index = bisect_right(held, claim.ports.first, key=_start) - 1
            piece = held[index] if index >= 0 else None
            if piece is None or not _same_forward(piece.holder, holder):
                raise ValueError(f"{holder.forward_id} holds no {claim}")
            del held[index]

    def rebuild_accepts(self, where: Where, holders: Iterable[tuple[Claim, ForwardPlan]]) -> None:
        """The accepts' union at `where` made again from `holders`, oldest first."""
        held: list[_Held] = []
        for claim, holder in holders:
            _cover(held, claim.ports, holder)
        self._accepts[where] = held
        self._own.add((True, where))

    def _writable(self, shared: bool, where: Where) -> list[_Held]:
        lists = self._accepts if shared else self._dnats
        if (shared, where) not in self._own:
            lists[where] = list(lists.get(where, ()))
            self._own.add((shared, where))
        return lists[where]


def _same_forward(one: ForwardPlan, other: ForwardPlan) -> bool:
    return (one.forward_id, one.target, one.family) == (
        other.forward_id,
        other.target,
        other.family,
    )


def settle(
    drafts_oldest_first: Iterable[Draft], book: ClaimBook
) -> list[tuple[ForwardPlan, Draft]]:
    """Decide each draft's state; an earlier draft keeps what it claims, later ones lose it.

    `book` holds what earlier decisions took (empty for a whole plan) and takes the winners'."""
    return [(decide(draft, book), draft) for draft in drafts_oldest_first]


def decide(draft: Draft, book: ClaimBook) -> ForwardPlan:
    """One draft against what `book` holds: active (its claims taken), conflict or inactive."""
    state, reason, conflict_with = ForwardState.ACTIVE, draft.reason, None
    claims: tuple[Claim, ...] = ()
    if reason is not None:
        state = ForwardState.INACTIVE
    else:
        claims = claims_of(draft.entries)
        contested = next(
            ((c, found) for c in claims if (found := book.holder_of(c)) is not None), None
        )
        if contested is not None:
            claim, (holder, overlap) = contested
            state, conflict_with = ForwardState.CONFLICT, holder.forward_id
            reason = conflict_reason(claim, overlap, holder)
    decided = ForwardPlan(
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
    if state == ForwardState.ACTIVE:
        book.take(claims, decided)
    return decided


def conflict_reason(claim: Claim, overlap: PortRange, holder: ForwardPlan) -> str:
    """Names the forward that keeps the port: its id, target and rule."""
    side = "downstream side" if claim.side == DOWNSTREAM else f"uplink {claim.side}"
    return (
        f"{claim.proto}/{overlap.short} on {claim.qube} ({side}, IPv{claim.family}) is taken "
        f"by forward {holder.forward_id} of {holder.target}: {format_rule(holder.rule)}"
    )
