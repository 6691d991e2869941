"""The host's state as the service keeps it: topology, each qube's rules, forward ages.

On disk under the state dir: `topology.json` (seed and current qubes with their features,
explicitly set properties), `qubes/<name>/firewall.xml` (a qube's accept/drop rules only, as
stock Qubes keeps them) and `order.json` (which forward came first, for conflicts). A forward
is the feature `portfwd.<id>` of its target (model/forward_feature.py), so it lives in
topology.json with the other features. Every write is atomic.
"""

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.forward_feature import feature_name, forward_id_of, is_forward_feature
from qubes_portfwd.model.rule import Action, FilterRule, ForwardRule, Rule, forward_id
from qubes_portfwd.model.rule_text import format_rule, parse_rule
from qubes_portfwd.model.topology import Topology
from qubes_portfwd.planner.expiry import live_rules
from qubes_portfwd.store.atomic_file import write_json_atomically

from .firewall_xml import load_firewall, save_firewall
from .topology_json import topology_from_json, topology_to_json

TOPOLOGY_FILE = "topology.json"
ORDER_FILE = "order.json"
DEFAULT_RULES: tuple[Rule, ...] = (FilterRule(Action.ACCEPT),)

log = logging.getLogger(__name__)


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
    # Each qube's forward ids with the rules they are of: only a changed qube's are hashed again.
    _ids: dict[str, tuple[Sequence[Rule], list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )

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
        order_path = state_dir / ORDER_FILE
        if order_path.exists():
            state.order = {str(k): int(v) for k, v in json.loads(order_path.read_bytes()).items()}
        loaded = {name: state._load_rules(name) for name in topology.qubes}
        state._migrate_forwards(loaded)
        for name in topology.qubes:
            filters = tuple(r for r in loaded[name] if isinstance(r, FilterRule))
            state.rules[name] = state._with_forwards(name, filters)
        state._update_order()
        return state

    def _migrate_forwards(self, loaded: Mapping[str, tuple[Rule, ...]]) -> None:
        """Forwards a firewall.xml of an older state still holds become features, once.

        The features are stored first: a crash before firewall.xml is rewritten only makes
        the next start move the same forwards again, which changes nothing.
        """
        moved = {q: [r for r in rules if isinstance(r, ForwardRule)] for q, rules in loaded.items()}
        moved = {q: forwards for q, forwards in moved.items() if forwards}
        if not moved:
            return
        topology = self.topology
        for qube, forwards in moved.items():
            features = dict(topology[qube].features)
            for rule in forwards:
                features[feature_name(forward_id(qube, rule))] = format_rule(rule)
            topology = topology.replace_qube(topology[qube].with_changes(features=features))
        self.commit_topology(topology, self.explicit)
        for qube in moved:
            filters = [r for r in loaded[qube] if isinstance(r, FilterRule)]
            save_firewall(self.firewall_path(qube), filters, 0.0, "")
            log.info("moved %d forwards of %s into features", len(moved[qube]), qube)

    def _with_forwards(self, qube: str, filters: tuple[Rule, ...]) -> tuple[Rule, ...]:
        """`filters` and the forwards stored as features of `qube`, the oldest forward first."""
        forwards = []
        for name, untrusted_value in self.topology[qube].features.items():
            if not is_forward_feature(name):
                continue
            try:  # validated before it was stored; a hand-edited state must not stop the host
                rule = parse_rule(untrusted_value)
                if not isinstance(rule, ForwardRule) or forward_id(qube, rule) != forward_id_of(
                    name
                ):
                    raise ValidationError(name, "not the forward its name says")
            except ValidationError as err:
                log.warning("ignoring feature %s of %s: %s", name, qube, err)
                continue
            forwards.append(rule)
        rank = self.order
        forwards.sort(key=lambda r: (rank.get(forward_id(qube, r), len(rank)), forward_id(qube, r)))
        return (*filters, *forwards)

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

        Accept/drop rules go to firewall.xml, forwards to the qube's `portfwd.<id>` features;
        only what changed is written. The ranks of new forwards are stored first (extra
        ranks name nothing and are pruned later), so a failure after that cannot leave a
        forward without one.
        """
        kept = live_rules(rules, now, boot_id)
        filters = [r for r in rules if isinstance(r, FilterRule)]
        live_filters = [r for r in kept if isinstance(r, FilterRule)]
        forwards = [r for r in kept if isinstance(r, ForwardRule)]
        old_filters = [r for r in self.rules_of(qube) if isinstance(r, FilterRule)]
        rules_after = {**self.rules, qube: kept}
        self._write_order(_ranked(self.order, self._ids_of(rules_after), prune=False))
        topology = self._forward_features(qube, forwards)
        forwards_changed = topology != self.topology
        if forwards_changed:
            try:
                self.commit_topology(topology, self.explicit)
            except OSError as err:
                raise ValidationError("features", f"could not store {qube}'s: {err}") from None
        # A change of forwards alone leaves firewall.xml alone; a rule-list Set writes it.
        if live_filters != old_filters or not forwards_changed:
            path = self.firewall_path(qube)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The store drops expired rules and refuses any rule that would not read back
            # equal, so memory matches the file without reading 10,000 rules back (1 s).
            save_firewall(path, filters, now, boot_id)
        self.rules[qube] = kept
        with contextlib.suppress(OSError):  # only forgotten ranks stay; the next commit prunes
            self._write_order(_ranked(self.order, self._ids_of(self.rules), prune=True))

    def _forward_features(self, qube: str, forwards: Sequence[ForwardRule]) -> Topology:
        """The topology with `qube`'s `portfwd.*` features holding exactly `forwards`."""
        features = dict(self.topology[qube].features)
        wanted = {feature_name(forward_id(qube, r)): format_rule(r) for r in forwards}
        for name in [n for n in features if is_forward_feature(n) and n not in wanted]:
            del features[name]
        features.update(wanted)
        if features == dict(self.topology[qube].features):
            return self.topology
        return self.topology.replace_qube(self.topology[qube].with_changes(features=features))

    def _ids_of(self, rules: Mapping[str, Sequence[Rule]]) -> list[str]:
        """Every forward id of `rules`, the qubes in name order."""
        found: list[str] = []
        for qube, qube_rules in sorted(rules.items()):
            known = self._ids.get(qube)
            if known is None or known[0] is not qube_rules:
                known = self._ids[qube] = (qube_rules, forward_ids(qube, qube_rules))
            found.extend(known[1])
        return found

    def _update_order(self) -> None:
        self._write_order(_ranked(self.order, self._ids_of(self.rules), prune=True))

    def _write_order(self, order: dict[str, int]) -> None:
        if order != self.order or not (self.state_dir / ORDER_FILE).exists():
            write_json_atomically(self.state_dir / ORDER_FILE, order)
            self.order = order


def _ranked(order: Mapping[str, int], present: Sequence[str], *, prune: bool) -> dict[str, int]:
    """New forwards (of `present`, every forward id) rank after every existing one; with
    `prune`, forgotten ones leave."""
    next_rank = max(order.values(), default=-1) + 1
    alive = set(present)
    ranked = {fid: rank for fid, rank in order.items() if not prune or fid in alive}
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
