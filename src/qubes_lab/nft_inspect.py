"""Read a qube's live ruleset back into the forwards it applies (for tests and diagnostics).

`inspect_ruleset` parses `nft -j list ruleset`; `expected_rules` says what the compiler
leaves in the kernel for given hops, in the same terms, so the two compare with `==`.
A DNAT counts as live only when its chain holds a `dnat` and a dispatch map sends to it.
Sets and maps come in the shapes of `lookups.py`; a masked one holds network addresses, and
the mask of the rule that looks it up gives their length (`address/N` when read back).
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
from qubes_portfwd.nft.lookups import ANY, Kind, Shape, mask_length, masked, shape_named
from qubes_portfwd.nft.syntax import BASE_TABLE, FAMILIES, NAT_TABLE, IPAddress

_FAMILIES = {"ip": 4, "ip6": 6}
_ALL_SOURCES = {4: "0.0.0.0/0", 6: "::/0"}
_DISPATCH_BASES = ("dnat-inbound", "dnat-downstream")
_SET_BASES = (INPUT_SET, FORWARD_SET)
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
    lookups: dict[tuple[int, str, str], Shape] = {}  # (family, table, name) of our sets/maps
    masks: list[tuple[int, str, str, tuple[str, ...]]] = []  # a rule's lookup and its masks
    held: dict[tuple[int, str, str], tuple[str, list[Any]]] = {}  # base and raw elements
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
            if kind == "rule" and body.get("table") in (NAT_TABLE, BASE_TABLE):
                masks.extend((family, body["table"], *found) for found in _lookups_in(body))
            table, bases = (
                (NAT_TABLE, (*_DISPATCH_BASES, HAIRPIN_MAP))
                if kind == "map"
                else (BASE_TABLE, _SET_BASES)
            )
            if kind in ("map", "set") and body.get("table") == table:
                found_named = _named(body.get("name"), bases)
                if found_named is not None:
                    lookups[(family, table, body["name"])] = found_named[1]
                    held[(family, table, body["name"])] = (found_named[0], body.get("elem") or [])
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            problems.append(f"{kind} {body.get('name') or body.get('chain')}: {err!r}")
    lengths, mask_problems = _mask_lengths(lookups, masks)
    problems += mask_problems
    for key, (base, untrusted_elems) in held.items():
        family, table, name = key
        shape = lookups[key]
        if shape.kind == Kind.MASKED:
            if key not in lengths:  # no rule looks it up: it admits nothing
                if untrusted_elems:
                    problems.append(f"{table} {name} holds elements but is never looked up")
                continue
            shape = masked(lengths[key], shape.slot)
        try:
            if table == NAT_TABLE:
                into = hairpin_dispatched if base == HAIRPIN_MAP else dispatched
                into.update((family, chain) for chain in _goto_targets(untrusted_elems))
                continue
            into_set = inputs if base == INPUT_SET else forwards
            prefix = _ALL_SOURCES[family] + " . " if shape == ANY else ""
            into_set.update((family, prefix + _element_text(e, shape)) for e in untrusted_elems)
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            problems.append(f"{table} {name}: {err!r}")
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


def _goto_targets(untrusted_elems: list[Any]) -> list[str]:
    found = []
    for untrusted_elem in untrusted_elems:
        _key, untrusted_verdict = untrusted_elem
        found.append(str(untrusted_verdict["goto"]["target"]))
    return found


def _named(untrusted_name: Any, bases: tuple[str, ...]) -> tuple[str, Shape] | None:
    """(base, shape) of a set or map name of ours."""
    if not isinstance(untrusted_name, str):
        return None
    for base in bases:
        shape = shape_named(base, untrusted_name)
        if shape is not None:
            return base, shape
    return None


def _lookups_in(untrusted_rule: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """Each set or map a rule looks up (`@name`), with the masks in the key it looks up by."""
    found = []
    for untrusted_expr in untrusted_rule.get("expr") or []:
        if not isinstance(untrusted_expr, dict):
            continue
        if "match" in untrusted_expr:
            key, name = untrusted_expr["match"].get("left"), untrusted_expr["match"].get("right")
        elif "vmap" in untrusted_expr:
            key, name = untrusted_expr["vmap"].get("key"), untrusted_expr["vmap"].get("data")
        else:
            continue
        if isinstance(name, str) and name.startswith("@"):
            parts = key.get("concat", [key]) if isinstance(key, dict) else [key]
            masks = tuple(str(p["&"][1]) for p in parts if isinstance(p, dict) and "&" in p)
            found.append((name[1:], masks))
    return found


def _mask_lengths(
    lookups: dict[tuple[int, str, str], Shape], masks: list[tuple[int, str, str, tuple[str, ...]]]
) -> tuple[dict[tuple[int, str, str], int], list[str]]:
    """Each masked set's prefix length, from the one mask its rules look it up by; problems:
    a masked lookup without exactly one netmask, any other with one, two lengths for one set."""
    lengths: dict[tuple[int, str, str], int] = {}
    problems = []
    for family, table, name, found in masks:
        key = (family, table, name)
        shape = lookups.get(key)
        if shape is None:
            continue
        if shape.kind != Kind.MASKED:
            if found:
                problems.append(f"lookup of {name}: masks {found}, expected none")
            continue
        try:
            if len(found) != 1:
                raise ValueError(f"masks {found}, expected one")
            length = mask_length(family, found[0])
        except ValueError as err:
            problems.append(f"lookup of {name}: {err}")
            continue
        if lengths.setdefault(key, length) != length:
            problems.append(f"lookup of {name}: /{length} and /{lengths[key]}")
    return lengths, problems


def _element_text(untrusted_elem: Any, shape: Shape) -> str:
    """A set element in the compiler's text: networks with their length, ports `A-B` or `A`.

    The source (first, unless the shape leaves it out) is written as a network; a masked
    shape's address takes the shape's length (host bits set there are a problem).
    """
    if isinstance(untrusted_elem, dict) and "elem" in untrusted_elem:  # element with options
        untrusted_elem = untrusted_elem["elem"]["val"]
    parts = untrusted_elem["concat"]
    texts = [_part_text(index, part, len(parts)) for index, part in enumerate(parts)]
    if shape != ANY:
        length = f"/{shape.prefixlen}" if shape.kind == Kind.MASKED else ""
        texts[0] = str(ipaddress.ip_network(texts[0] + length))
    return " . ".join(texts)


def _part_text(index: int, untrusted_part: Any, count: int) -> str:
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
    return str(untrusted_part)
