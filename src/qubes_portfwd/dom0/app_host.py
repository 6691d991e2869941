"""The Dom0Host port over core-admin's `app.domains`, read inside qubesd (duck-typed: no import
of `qubes` here, so the module loads and tests without core-admin).

`refresh()` (on qubesd's loop thread, after an event) takes a snapshot of the qubes, their
properties and features; the controller's threads read only that immutable snapshot.
Writes (`commit_rules`) go back to qubesd's loop thread, where core-admin's objects live.
"""

import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..model.errors import ValidationError
from ..model.forward_feature import feature_name, forward_id_of, is_forward_feature
from ..model.rule import ForwardRule, Rule, forward_id
from ..model.rule_text import format_rule, parse_rule
from ..model.topology import Qube, Topology
from ..planner.expiry import live_rules
from ..store.atomic_file import write_json_atomically

ORDER_FILE = "order.json"
ADDRESS_PROPERTIES = ("netvm", "ip", "ip6")
T = TypeVar("T")
OnLoop = Callable[[Callable[[], T]], T]

log = logging.getLogger(__name__)


def qube_of(vm: Any) -> Qube:
    """One core-admin qube as the planner sees it: `ip`/`ip6` only when set explicitly."""
    netvm = getattr(vm, "netvm", None)
    return Qube(
        name=str(vm.name),
        qid=int(vm.qid),
        klass=type(vm).__name__,
        netvm=None if netvm is None else str(netvm.name),
        provides_network=bool(getattr(vm, "provides_network", False)),
        ip=_explicit(vm, "ip", ipaddress.IPv4Address),
        ip6=_explicit(vm, "ip6", ipaddress.IPv6Address),
        dispid=getattr(vm, "dispid", None) if type(vm).__name__ == "DispVM" else None,
        features={str(k): str(v) for k, v in vm.features.items()},
    )


def _explicit(vm: Any, prop: str, kind: Callable[[str], Any]) -> Any:
    if not hasattr(vm, prop) or vm.property_is_default(prop):
        return None
    value = getattr(vm, prop)
    return None if value is None else kind(str(value))


# A forward feature's parse: (qube, feature name, value) -> (rule, its id).
Parses = dict[tuple[str, str, str], tuple[ForwardRule, str]]


def forwards_of(
    qube: Qube,
    rank: Mapping[str, int],
    known: Mapping[tuple[str, str, str], tuple[ForwardRule, str]] | None = None,
    parsed: Parses | None = None,
) -> tuple[Rule, ...]:
    """The forwards stored as `qube`'s `portfwd.<id>` features, oldest first.

    A feature found in `known` (a parse of the same value) is not parsed again; every valid
    one goes into `parsed`."""
    found: list[tuple[ForwardRule, str]] = []
    for name, untrusted_value in qube.features.items():
        if not is_forward_feature(name):
            continue
        key = (qube.name, name, untrusted_value)
        forward = None if known is None else known.get(key)
        if forward is None:
            try:  # checked at Set; a qubes.xml edited by hand must not stop the extension
                forward = _parse_forward(qube.name, name, untrusted_value)
            except ValidationError as err:
                log.warning("ignoring feature %s of %s: %s", name, qube.name, err)
                continue
        if parsed is not None:
            parsed[key] = forward
        found.append(forward)
    found.sort(key=lambda forward: (rank.get(forward[1], len(rank)), forward[1]))
    return tuple(rule for rule, _ in found)


def _parse_forward(qube: str, name: str, untrusted_value: str) -> tuple[ForwardRule, str]:
    rule = parse_rule(untrusted_value)
    if not isinstance(rule, ForwardRule):
        raise ValidationError(name, "not the forward its name says")
    fid = forward_id(qube, rule)
    if fid != forward_id_of(name):
        raise ValidationError(name, "not the forward its name says")
    return rule, fid


class AppHost:
    """Dom0Host over a core-admin app; `on_loop(fn)` runs `fn` on qubesd's loop thread."""

    def __init__(self, app: Any, state_dir: Path, on_loop: OnLoop[Any]) -> None:
        self.app = app
        self.state_dir = state_dir
        self.on_loop = on_loop
        self.order: dict[str, int] = _read_order(state_dir / ORDER_FILE)
        self.topology = Topology({})
        self.explicit: dict[str, frozenset[str]] = {}
        self.rules: dict[str, tuple[Rule, ...]] = {}
        # The forward features as the last refresh parsed them: a refresh parses only values
        # it has not seen (every forward, at 1,000 forwards ~22 ms, each event and Set).
        self._parsed: Parses = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read every qube (call on qubesd's loop thread); new forwards get ranks."""
        qubes = [qube_of(vm) for vm in self.app.domains if type(vm).__name__ != "AdminVM"]
        explicit = {
            vm.name: frozenset(
                p for p in ADDRESS_PROPERTIES if hasattr(vm, p) and not vm.property_is_default(p)
            )
            for vm in self.app.domains
            if type(vm).__name__ != "AdminVM"
        }
        topology = Topology.of(*qubes)
        parsed: Parses = {}
        rules = {q.name: forwards_of(q, self.order, self._parsed, parsed) for q in qubes}
        self._rank(rules, parsed)
        self.topology, self.explicit, self.rules = topology, explicit, rules
        self._parsed = parsed

    def rules_of(self, qube: str) -> tuple[Rule, ...]:
        return self.rules.get(qube, ())

    def commit_rules(self, qube: str, rules: Sequence[Rule], now: float, boot_id: str) -> None:
        """`qube`'s `portfwd.*` features become exactly its live forwards; qubes.xml saved.

        Accept/drop rules are Qubes' own (`vm.firewall`) and are not touched here.
        """
        kept = [r for r in live_rules(rules, now, boot_id) if isinstance(r, ForwardRule)]
        wanted = {feature_name(forward_id(qube, r)): format_rule(r) for r in kept}

        def apply() -> None:
            features = self.app.domains[qube].features
            for name in [n for n in features if is_forward_feature(n) and n not in wanted]:
                del features[name]
            for name, value in wanted.items():
                if features.get(name) != value:
                    features[name] = value
            self.app.save()
            self.refresh()

        self.on_loop(apply)

    def commit_topology(self, topology: Topology, explicit: Mapping[str, frozenset[str]]) -> None:
        """Features only (a NAT policy migrated at start): properties are qubesd's to change."""

        def apply() -> None:
            for name, qube in topology.qubes.items():
                if name not in self.topology:
                    continue
                features = self.app.domains[name].features
                for key in [k for k in features if k not in qube.features]:
                    del features[key]
                for key, value in qube.features.items():
                    if features.get(key) != value:
                        features[key] = value
            self.app.save()
            self.refresh()

        self.on_loop(apply)

    def _rank(self, rules: Mapping[str, Sequence[Rule]], parsed: Parses) -> None:
        ids = {id(rule): fid for rule, fid in parsed.values()}  # each rule is alive in `rules`
        present = [
            ids.get(id(r)) or forward_id(q, r)
            for q, qube_rules in sorted(rules.items())
            for r in qube_rules
        ]
        alive = set(present)
        ranked = {fid: rank for fid, rank in self.order.items() if fid in alive}
        next_rank = max(self.order.values(), default=-1) + 1
        for fid in present:
            if fid not in ranked:
                ranked[fid] = next_rank
                next_rank += 1
        if ranked != self.order:
            self.order = ranked
            with contextlib.suppress(OSError):  # ranks are kept in memory; saved next time
                self.state_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomically(self.state_dir / ORDER_FILE, ranked)


def _read_order(path: Path) -> dict[str, int]:
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_bytes()).items()}
    except (OSError, ValueError, AttributeError):
        return {}
