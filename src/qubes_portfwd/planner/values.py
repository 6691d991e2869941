"""What the planner decides, as values: one plan per forward and family, and the whole Plan.

A forward that applies to both IP families (internal forwards, where IPv6 is possible) gets
two ForwardPlans with the same `forward_id`; `family` tells them apart, and each has its own
state, because one family can be blocked (no IPv6 on a hop, a conflict) while the other runs.

Hops run from the outside in (edge … target's netvm, target). When the target's netvm is
itself the edge, that one qube has role EDGE and DNATs straight to the target. Inactive and
conflicting forwards keep their hops too, as far as the current path is known, so views can
draw where they would go; only active forwards have entries in `Plan.entries`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from ..model.rule import ForwardRule, QubeName


class ForwardState(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    CONFLICT = "conflict"


class HopRole(StrEnum):
    """Where a qube sits on a forward's path; a netvm that is also the edge is the EDGE."""

    EDGE = "edge"
    MIDDLE = "middle"
    NETVM = "netvm"
    TARGET = "target"


@dataclass(frozen=True, slots=True)
class PlannedHop:
    """One qube on a forward's path and the entry key the forward has (or would have) there."""

    qube: QubeName
    role: HopRole
    key: str


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    """The decision for one forward rule in one IP family; `conflict_with` is the winner's id.

    `hops` run outside in and are filled (where the path is known) even when not active."""

    forward_id: str
    target: QubeName
    position: int
    rule: ForwardRule
    family: int
    state: ForwardState
    reason: str | None
    hops: tuple[PlannedHop, ...]
    conflict_with: str | None = None

    @property
    def active(self) -> bool:
        return self.state == ForwardState.ACTIVE

    @property
    def path(self) -> tuple[QubeName, ...]:
        """The qubes of `hops`, outside in."""
        return tuple(hop.qube for hop in self.hops)

    @property
    def network_qubes(self) -> tuple[QubeName, ...]:
        """The qubes the forward passes through (every hop but the target)."""
        return tuple(hop.qube for hop in self.hops if hop.role != HopRole.TARGET)


def freeze_entries(entries: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType(
        {qube: MappingProxyType(dict(sorted(values.items()))) for qube, values in entries.items()}
    )


@dataclass(frozen=True)
class Plan:
    """Every forward's decision and every qube's entries (each qube of the topology has some).

    `forwards` is ordered by target name, rule position, then family."""

    forwards: tuple[ForwardPlan, ...]
    entries: Mapping[QubeName, Mapping[str, str]]

    def by_id(self, forward_id: str) -> tuple[ForwardPlan, ...]:
        """Both families of a forward (or every copy of a duplicated one)."""
        return tuple(f for f in self.forwards if f.forward_id == forward_id)

    def of_target(self, qube: QubeName) -> tuple[ForwardPlan, ...]:
        return tuple(f for f in self.forwards if f.target == qube)

    def through(self, qube: QubeName) -> tuple[ForwardPlan, ...]:
        """Forwards that pass through network qube `qube` (the per-network-qube view)."""
        return tuple(f for f in self.forwards if qube in f.network_qubes)

    def in_state(self, state: ForwardState) -> tuple[ForwardPlan, ...]:
        return tuple(f for f in self.forwards if f.state == state)
