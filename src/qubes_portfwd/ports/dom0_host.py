"""Port: dom0 as the controller sees it — qubes with properties and features, rules, ranks.

The controller reads the topology (each qube's netvm, addresses and features, forwards
among them as `portfwd.<id>`) and each qube's rules, and stores a change of a qube's rules
(forwards become features, accept/drop rules stay Qubes' own) all or nothing. The lab's
adapter is its emulated qubesd's state (`qubes_lab.qubesd.state.HostState`); on a stock
host the extension reads `app.domains` inside qubesd (issue 16).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ..model.rule import Rule
from ..model.topology import Topology


class Dom0Host(Protocol):
    state_dir: Path  # where the controller keeps its own files (ranks, NAT policy)
    topology: Topology
    explicit: dict[str, frozenset[str]]  # properties set explicitly, per qube
    rules: Mapping[str, tuple[Rule, ...]]  # every qube's rules: accept/drop, then forwards
    order: Mapping[str, int]  # forward id -> rank (older first), for conflicts

    def rules_of(self, qube: str) -> tuple[Rule, ...]: ...

    def commit_rules(self, qube: str, rules: Sequence[Rule], now: float, boot_id: str) -> None:
        """Store `qube`'s rules: new forwards' ranks first, then features and firewall rules."""
        ...

    def commit_topology(self, topology: Topology, explicit: Mapping[str, frozenset[str]]) -> None:
        """Store a change of qubes' properties or features."""
        ...


class NetvmHook(Protocol):
    """What the platform runs after a qube's netvm changed, before the new plan is published
    (the lab re-attaches the qube's uplink; qubesd does that itself on a stock host)."""

    async def run(self, qube: str) -> object: ...
