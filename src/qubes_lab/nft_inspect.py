"""Read a qube's live ruleset back into the forwards it applies (for tests and diagnostics).

`inspect_ruleset` parses `nft -j list ruleset`; `expected_rules` says what the compiler
leaves in the kernel for given hops, in the same terms, so the two compare with `==`.
A DNAT counts as live only when its chain holds a `dnat` and a dispatch map sends to it.
"""

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from qubes_portfwd.model.entries import DnatHop, Hop
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.nft.forwards import FORWARD_SET, INPUT_SET, forward_elements, input_elements
from qubes_portfwd.nft.hairpin import HAIRPIN_MAP
from qubes_portfwd.nft.lookups import SHAPES, Shape
from qubes_portfwd.nft.syntax import BASE_TABLE, FAMILIES, NAT_TABLE, IPAddress

_FAMILIES = {"ip": 4, "ip6": 6}
_ALL_SOURCES = {4: "0.0.0.0/0", 6: "::/0"}
_DISPATCH_MAPS = frozenset(s.name(b) for b in ("dnat-inbound", "dnat-downstream") for s in SHAPES)
_HAIRPIN_MAPS = frozenset(s.name(HAIRPIN_MAP) for s in SHAPES)
# Each accept set's shapes, by name: what they hold and whether the source was left out.
_SETS = {s.name(base): (base, s) for base in (INPUT_SET, FORWARD_SET) for s in SHAPES}
_CHAIN_PREFIXES = {"fwd-": "dnat", "hairpin-": "hairpin"}


@dataclass(frozen=True, order=True)
class LiveDnat:
    """One forward's DNAT in one family, and where it sends packets."""

    forward_id: str
    family: int
    to: IPAddress


@dataclass(frozen=True)
class LiveRules:
    """What of ours a qube's kernel holds: DNATs, hairpins, and the accept set elements.

    Elements are in the compiler's own text form (`0.0.0.0/0 . tcp . 8080`), per family.
    """

    dnats: frozenset[LiveDnat] = frozenset()
    hairpins: frozenset[tuple[str, int]] = frozenset()
    inputs: frozenset[tuple[int, str]] = frozenset()
    forwards: frozenset[tuple[int, str]] = frozenset()
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def forward_ids(self) -> frozenset[tuple[str, int]]:
        return frozenset((d.forward_id, d.family) for d in self.dnats)

    def without_hairpins(self) -> "LiveRules":
        return LiveRules(self.dnats, frozenset(), self.inputs, self.forwards)


def expected_rules(hops: Iterable[Hop]) -> LiveRules:
    """What compiling `hops` leaves live, hairpins aside (they depend on the interfaces)."""
    listed = list(hops)
    return LiveRules(
        dnats=frozenset(
            LiveDnat(h.forward_id, h.family, h.to) for h in listed if isinstance(h, DnatHop)
        ),
        inputs=frozenset((f, e) for f in FAMILIES for e in input_elements(f, listed)),
        forwards=frozenset((f, e) for f in FAMILIES for e in forward_elements(f, listed)),
    )


def inspect_ruleset(untrusted_json: str) -> LiveRules:
    """Our forwards in `nft -j list ruleset` output; unreadable parts are listed as problems."""
    try:
        untrusted_items = json.loads(untrusted_json)["nftables"]
    except (ValueError, KeyError, TypeError):
        raise ValidationError("ruleset", "expected the JSON of `nft -j list ruleset`") from None
    if not isinstance(untrusted_items, list):
        raise ValidationError("ruleset", "expected a list under 'nftables'")
    targets: dict[tuple[int, str], IPAddress] = {}
    dispatched: set[tuple[int, str]] = set()
    hairpin_dispatched: set[tuple[int, str]] = set()
    inputs: set[tuple[int, str]] = set()
    forwards: set[tuple[int, str]] = set()
    problems: list[str] = []
    for untrusted_item in untrusted_items:
        if not isinstance(untrusted_item, dict) or len(untrusted_item) != 1:
            continue
        ((kind, body),) = untrusted_item.items()
        if not isinstance(body, dict) or body.get("family") not in _FAMILIES:
            continue
        family = _FAMILIES[body["family"]]
        try:
            if kind == "rule" and body.get("table") == NAT_TABLE:
                found = _dnat_target(body)
                if found is not None:
                    targets[(family, found[0])] = found[1]
            elif kind == "map" and body.get("table") == NAT_TABLE:
                into = hairpin_dispatched if body.get("name") in _HAIRPIN_MAPS else dispatched
                if body.get("name") in _DISPATCH_MAPS | _HAIRPIN_MAPS:
                    into.update((family, chain) for chain in _goto_targets(body))
            elif kind == "set" and body.get("table") == BASE_TABLE and body.get("name") in _SETS:
                base, shape = _SETS[body["name"]]
                into_set = inputs if base == INPUT_SET else forwards
                prefix = _ALL_SOURCES[family] + " . " if shape == Shape.ANY else ""
                into_set.update(
                    (family, prefix + _element_text(e, sourced=shape != Shape.ANY))
                    for e in body.get("elem") or []
                )
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            problems.append(f"{kind} {body.get('name') or body.get('chain')}: {err!r}")
    dnats = set()
    hairpins = set()
    for (family, chain), to in targets.items():
        if chain.startswith("fwd-") and (family, chain) in dispatched:
            dnats.add(LiveDnat(chain.removeprefix("fwd-"), family, to))
        elif chain.startswith("hairpin-") and (family, chain) in hairpin_dispatched:
            hairpins.add((chain.removeprefix("hairpin-"), family))
    return LiveRules(
        frozenset(dnats),
        frozenset(hairpins),
        frozenset(inputs),
        frozenset(forwards),
        tuple(problems),
    )


def _dnat_target(untrusted_rule: dict[str, Any]) -> tuple[str, IPAddress] | None:
    chain = untrusted_rule.get("chain")
    if not isinstance(chain, str) or not chain.startswith(tuple(_CHAIN_PREFIXES)):
        return None
    for untrusted_expr in untrusted_rule.get("expr") or []:
        if isinstance(untrusted_expr, dict) and "dnat" in untrusted_expr:
            return chain, ipaddress.ip_address(untrusted_expr["dnat"]["addr"])
    return None


def _goto_targets(untrusted_map: dict[str, Any]) -> list[str]:
    found = []
    for untrusted_elem in untrusted_map.get("elem") or []:
        _key, untrusted_verdict = untrusted_elem
        found.append(str(untrusted_verdict["goto"]["target"]))
    return found


def _element_text(untrusted_elem: Any, sourced: bool = True) -> str:
    """A set element in the compiler's text: networks with their length, ports `A-B` or `A`.

    `sourced`: the element starts with a source (written as a network by the compiler).
    """
    if isinstance(untrusted_elem, dict) and "elem" in untrusted_elem:  # element with options
        untrusted_elem = untrusted_elem["elem"]["val"]
    parts = untrusted_elem["concat"]
    return " . ".join(
        _part_text(index, part, len(parts), sourced) for index, part in enumerate(parts)
    )


def _part_text(index: int, untrusted_part: Any, count: int, sourced: bool) -> str:
    if isinstance(untrusted_part, dict) and "prefix" in untrusted_part:
        prefix = untrusted_part["prefix"]
        return str(ipaddress.ip_network(f"{prefix['addr']}/{prefix['len']}"))
    if isinstance(untrusted_part, dict) and "range" in untrusted_part:
        first, last = untrusted_part["range"]
        if index < count - 1:
            raise ValueError(f"unexpected range in position {index}")
        return f"{int(first)}-{int(last)}" if first != last else str(int(first))
    if isinstance(untrusted_part, int):
        return str(untrusted_part)
    text = str(untrusted_part)
    if index == 0 and sourced:  # the source is written as a network by the compiler
        return str(ipaddress.ip_network(text))
    return text
