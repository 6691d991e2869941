"""A pure model of the lookups in a compiled script: which verdict or accept a packet meets.

It reads the script's text (set and map declarations, elements, dispatch and accept rules)
and evaluates a packet the way the kernel would: the key built from the rule's expressions
(`ip saddr & 255.255.255.0` masks), exact matching in hash sets, prefix and range matching
only in interval sets (and a prefix or range in a hash set is an error, as nft refuses it).
"""

import functools
import ipaddress
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_FAMILIES = {"ip": 4, "ip6": 6}
_ACCEPT_CONDITIONS = ("ct state new ct status dnat ", "ct state new ")


@dataclass(frozen=True)
class Packet:
    family: int
    iifname: str
    downstream: bool  # arrives from interface group 2
    saddr: Address
    daddr: Address
    proto: str
    dport: int


Part = str | ipaddress.IPv4Network | ipaddress.IPv6Network | Address | tuple[int, int]


@dataclass
class Lookup:
    """A set or map: its key's field count, whether it has intervals, and its elements."""

    fields: int
    interval: bool
    elements: list[tuple[tuple[Part, ...], str | None]] = field(default_factory=list)


@dataclass
class Ruleset:
    """(family, table, name) -> lookup; (family, table, chain) -> rules as (selector, name)."""

    lookups: dict[tuple[int, str, str], Lookup] = field(default_factory=dict)
    rules: dict[tuple[int, str, str], list[tuple[str, str]]] = field(default_factory=dict)


def parse_script(script: str, ruleset: Ruleset | None = None) -> Ruleset:
    """The lookups and the rules that use them (other rules and chains are left out),
    applied on top of `ruleset` (what an earlier script left) when given."""
    ruleset = ruleset if ruleset is not None else Ruleset()
    table: tuple[int, str] | None = None
    block: list[str] | None = None
    lines = script.splitlines()
    for line in lines:
        if block is not None:
            if line == "  }":
                _end_block(ruleset, table, block)
                block = None
            else:
                block.append(line)
            continue
        if found := re.fullmatch(r"table (ip6?) (\S+) \{", line):
            table = (_FAMILIES[found.group(1)], found.group(2))
        elif line == "}":
            table = None
        elif table is not None and re.fullmatch(r"  (set|map|chain) \S+ \{", line):
            block = [line]
        elif found := re.fullmatch(r"add element (ip6?) (\S+) (\S+) \{ (.*) \}", line):
            key = (_FAMILIES[found.group(1)], found.group(2), found.group(3))
            ruleset.lookups[key].elements += _elements(found.group(4), ruleset.lookups[key])
        elif found := re.fullmatch(r"add rule (ip6?) (\S+) (\S+) (.*) @(\S+) accept", line):
            selector = found.group(4)
            for condition in _ACCEPT_CONDITIONS:
                selector = selector.removeprefix(condition)
            key = (_FAMILIES[found.group(1)], found.group(2), found.group(3))
            ruleset.rules.setdefault(key, []).append((selector, found.group(5)))
        elif found := re.fullmatch(r"delete table (ip6?) (\S+)", line):
            gone = (_FAMILIES[found.group(1)], found.group(2))
            for kept in (ruleset.lookups, ruleset.rules):
                for key in [k for k in kept if k[:2] == gone]:
                    del kept[key]  # type: ignore[attr-defined]
        elif found := re.fullmatch(r"flush chain (ip6?) (\S+) (\S+)", line):
            ruleset.rules.pop((_FAMILIES[found.group(1)], found.group(2), found.group(3)), None)
        elif found := re.fullmatch(r"(delete|flush) set (ip6?) (\S+) (\S+)", line):
            key = (_FAMILIES[found.group(2)], found.group(3), found.group(4))
            if found.group(1) == "delete":
                in_use = [r for r, used in ruleset.rules.items() if key[2] in (n for _, n in used)]
                assert not in_use, f"{key} is still used by {in_use}"  # the kernel: EBUSY
                del ruleset.lookups[key]
            else:
                ruleset.lookups[key].elements.clear()
    return ruleset


def _end_block(ruleset: Ruleset, table: tuple[int, str] | None, block: list[str]) -> None:
    assert table is not None
    kind, name = block[0].split()[:2]
    key = (*table, name)
    if kind == "chain":
        for rule in block[1:]:
            if found := re.fullmatch(r"\s+(.*) vmap @(\S+)", rule):
                ruleset.rules.setdefault(key, []).append((found.group(1), found.group(2)))
        return
    body = "\n".join(block[1:])
    type_line = re.search(r"type (.*)", body)
    assert type_line is not None, block
    key_type = type_line.group(1).split(" : ")[0]
    if key not in ruleset.lookups:  # a declaration of an existing set keeps its elements
        ruleset.lookups[key] = Lookup(len(key_type.split(" . ")), "flags interval" in body)
    if found := re.search(r"elements = \{ (.*) \}", body, re.DOTALL):
        ruleset.lookups[key].elements += _elements(found.group(1), ruleset.lookups[key])


def _elements(text: str, lookup: Lookup) -> list[tuple[tuple[Part, ...], str | None]]:
    found = []
    for element in (e.strip() for e in text.split(",")):
        key, _, value = element.partition(" : ")
        parts = key.split(" . ")
        assert len(parts) == lookup.fields, (element, lookup.fields)
        if not lookup.interval:
            assert not any("/" in p or re.fullmatch(r"\d+-\d+", p) for p in parts), element
        found.append((tuple(_part(p) for p in parts), value or None))
    return found


def _part(text: str) -> Part:
    if text.startswith('"'):
        return text.strip('"')
    if found := re.fullmatch(r"(\d+)(?:-(\d+))?", text):
        return int(found.group(1)), int(found.group(2) or found.group(1))
    if "/" in text:
        return ipaddress.ip_network(text)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return text  # a protocol's name


@functools.cache
def _getters(selector: str) -> tuple[Callable[[Packet], object], ...]:
    """The packet fields a rule's key is made of, parsed once per selector."""
    getters: list[Callable[[Packet], object]] = []
    for expression in selector.split(" . "):
        if found := re.fullmatch(r"ip6? ([sd]addr)(?: & (\S+))?", expression):
            name = found.group(1)
            if found.group(2) is None:
                getters.append(operator.attrgetter(name))
            else:
                mask = int(ipaddress.ip_address(found.group(2)))
                getters.append(functools.partial(_masked, name, mask))
        else:
            fields = {"iifname": "iifname", "meta l4proto": "proto", "th dport": "dport"}
            getters.append(operator.attrgetter(fields[expression]))
    return tuple(getters)


def _masked(name: str, mask: int, packet: Packet) -> Address:
    address = getattr(packet, name)
    return type(address)(int(address) & mask)


def _key(selector: str, packet: Packet) -> tuple[object, ...]:
    return tuple(get(packet) for get in _getters(selector))


def _part_matches(part: Part, value: object) -> bool:
    if isinstance(part, tuple):
        return isinstance(value, int) and part[0] <= value <= part[1]
    if isinstance(part, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value in part
    return part == value


def lookup(ruleset: Ruleset, where: tuple[int, str, str], key: tuple[object, ...]) -> list[str]:
    """The values (or "" for a set) of every element matching `key`."""
    found = ruleset.lookups[where]
    assert found.fields == len(key), (where, key)
    return [
        value or ""
        for parts, value in found.elements
        if all(_part_matches(p, v) for p, v in zip(parts, key, strict=True))
    ]


def dispatch(ruleset: Ruleset, table: str, packet: Packet) -> str | None:
    """The verdict of the first dispatch rule whose map has the packet's key, or None."""
    for rule, name in ruleset.rules.get((packet.family, table, "dispatch"), []):
        if rule.startswith("iifgroup 2 "):
            if not packet.downstream:
                continue
            rule = rule.removeprefix("iifgroup 2 ")
        hits = lookup(ruleset, (packet.family, table, name), _key(rule, packet))
        assert len(hits) <= 1, (name, packet, hits)  # the kernel keeps keys unique
        if hits:
            return hits[0]
    return None


def accepted(ruleset: Ruleset, chain: str, packet: Packet) -> bool:
    """Whether any accept rule of `chain` in `qubes` admits the packet."""
    rules = ruleset.rules.get((packet.family, "qubes", chain), [])
    return any(
        lookup(ruleset, (packet.family, "qubes", name), _key(rule, packet)) for rule, name in rules
    )
