"""The host's state as the service keeps it: topology, each qube's rules, forward ages.

On disk under the state dir: `topology.json` (seed and current qubes, explicitly set
properties), `qubes/<name>/firewall.xml` (the only home of a qube's rules, forwards
included) and `order.json` (which forward came first, for conflicts). Every write is atomic.
"""

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.errors import ValidationError
from ..model.rule import Action, FilterRule, ForwardRule, Rule, forward_id
from ..model.topology import Topology
from ..planner.expiry import live_rules
from ..store.atomic_file import write_atomically
from ..store.firewall_xml import load_firewall, save_firewall
from .topology_json import topology_from_json, topology_to_json

TOPOLOGY_FILE = "topology.json"
ORDER_FILE = "order.json"
DEFAULT_RULES: tuple[Rule, ...] = (FilterRule(Action.ACCEPT),)


def write_json_atomically(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, sort_keys=True, indent=1).encode())


def forward_ids(target: str, rules: Iterable[Rule]) -> list[str]:
    return [forward_id(target, r) for r in rules if isinstance(r, ForwardRule)]


@dataclass
class HostState:
    """Mutable only through `commit_*`, each of which writes to disk before memory changes."""

    state_dir: Path
    seed: Topology
    topology: Topology
    explicit: dict[str, frozenset[str]]
    rules: dict[str, tuple[Rule, ...]]
    order: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(cls, state_dir: Path, initial: Topology | None) -> "HostState":
        """Load the state dir; a fresh one is seeded from `initial`."""
        state_dir.mkdir(parents=True, exist_ok=True)
        topology_path = state_dir / TOPOLOGY_FILE
        if topology_path.exists():
            document = json.loads(topology_path.read_bytes())
            seed = topology_from_json(document["seed"])
            topology = topology_from_json(document["current"])
            explicit = {k: frozenset(v) for k, v in document.get("explicit", {}).items()}
        elif initial is not None:
            seed = topology = initial
            explicit = {}
            write_json_atomically(topology_path, _topology_document(seed, topology, explicit))
        else:
            raise ValidationError("topology", f"{topology_path} is missing and no seed was given")
        state = cls(state_dir, seed, topology, explicit, {})
        for name in topology.qubes:
            state.rules[name] = state._load_rules(name)
        order_path = state_dir / ORDER_FILE
        if order_path.exists():
            state.order = {str(k): int(v) for k, v in json.loads(order_path.read_bytes()).items()}
        state._update_order()
        return state

    def firewall_path(self, qube: str) -> Path:
        return self.state_dir / "qubes" / qube / "firewall.xml"

    def _load_rules(self, qube: str) -> tuple[Rule, ...]:
        path = self.firewall_path(qube)
        if not path.exists():
            return DEFAULT_RULES
        return tuple(load_firewall(path))

    def rules_of(self, qube: str) -> tuple[Rule, ...]:
        return self.rules.get(qube, DEFAULT_RULES)

    def commit_topology(self, topology: Topology, explicit: Mapping[str, frozenset[str]]) -> None:
        document = _topology_document(self.seed, topology, explicit)
        write_json_atomically(self.state_dir / TOPOLOGY_FILE, document)
        self.topology = topology
        self.explicit = dict(explicit)

    def commit_rules(self, qube: str, rules: Sequence[Rule], now: float, boot_id: str) -> None:
        """One step for the caller: on any failure the files and memory are as before.

        The ranks of new forwards are stored first (extra ranks name nothing and are pruned
        later), so a failure after firewall.xml was written cannot leave a rule without one.
        """
        kept = live_rules(rules, now, boot_id)
        rules_after = {**self.rules, qube: kept}
        self._write_order(_ranked(self.order, rules_after, prune=False))
        path = self.firewall_path(qube)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The store drops expired rules and refuses any rule that would not read back equal,
        # so memory matches the file without reading 10,000 rules back (1 s).
        save_firewall(path, list(rules), now, boot_id)
        self.rules[qube] = kept
        with contextlib.suppress(OSError):  # only forgotten ranks stay; the next commit prunes
            self._write_order(_ranked(self.order, self.rules, prune=True))

    def _update_order(self) -> None:
        self._write_order(_ranked(self.order, self.rules, prune=True))

    def _write_order(self, order: dict[str, int]) -> None:
        if order != self.order or not (self.state_dir / ORDER_FILE).exists():
            write_json_atomically(self.state_dir / ORDER_FILE, order)
            self.order = order


def _ranked(
    order: Mapping[str, int], rules: Mapping[str, Sequence[Rule]], *, prune: bool
) -> dict[str, int]:
    """New forwards rank after every existing one; with `prune`, forgotten ones leave."""
    present = [fid for q, qube_rules in sorted(rules.items()) for fid in forward_ids(q, qube_rules)]
    next_rank = max(order.values(), default=-1) + 1
    ranked = {fid: rank for fid, rank in order.items() if not prune or fid in present}
    for fid in present:
        if fid not in ranked:
            ranked[fid] = next_rank
            next_rank += 1
    return ranked


def _topology_document(
    seed: Topology, topology: Topology, explicit: Mapping[str, frozenset[str]]
) -> dict[str, Any]:
    return {
        "version": 1,
        "seed": topology_to_json(seed),
        "current": topology_to_json(topology),
        "explicit": {k: sorted(v) for k, v in sorted(explicit.items()) if v},
    }
