"""Which lookup an element goes to: an exact (hash) one when it can, an interval one if it must.

nft keeps a concatenated set with intervals as pipapo, whose load time and per-packet cost
grow with its element count (bench: ~0.05 us per element, 500 us per new connection at
10,000 forwards; `nft -f` of 8,343 /24 sources 2.9 s); a set without intervals is a hash
table, one lookup whatever its size. So every set or map of ours comes in several shapes,
each with its own rule:
- `any` (source all addresses, one port): the source is left out of the key;
- `host` (one source address, one port);
- `mask<I>` (a source network, one port): slot I holds one fixed prefix length of the
  family (`SLOT_LENGTHS`: the lengths LANs use); the key holds the packet's source masked
  to that length (`ip saddr & 255.255.255.0`, in the rule), the element the network's
  address. Every slot is declared, with its rule, whether used or not: the structure of
  what we load never depends on the forwards, so adding or removing one changes set
  elements only, which the agent loads in place (`delta.py`) instead of whole;
- `range` (several ports, or a prefix length without a slot): the interval form, under the
  original name.
Each element lands in exactly one shape, and an element matches a packet in its shape's
lookup exactly when it would in the interval set, so the union of the lookups holds exactly
what the interval set alone would hold. Keys are disjoint (accept sets: `disjoint.py`;
dispatch maps: clashing DNATs are left out, a forward's sources collapsed), so no packet
matches two elements, and the order of the lookups cannot change a verdict.
"""

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from ..model.hosts import Network
from ..model.ports import PortRange
from .syntax import addr_type, address_text, elements_line, network, ports, table_family

# Each slot costs every new connection one more hash lookup per chain (~0.1 us, empty or
# not), while pipapo costs ~0.05 us per element: past the lengths LANs use the rest are rare
# enough to stay in the interval set. Most used first (a smaller `max_masked` keeps those).
SLOT_LENGTHS = {4: (24, 16, 8, 12, 20, 22, 23, 28), 6: (64, 48, 56, 60, 32, 40, 44, 52)}
MASK_SLOTS = 8
MAX_MASKED_LENGTHS = MASK_SLOTS


class Kind(IntEnum):
    """The shapes in the order of their declarations and rules."""

    ANY = 0
    HOST = 1
    MASKED = 2
    RANGE = 3


_SUFFIXES = {Kind.ANY: "-any", Kind.HOST: "-host", Kind.RANGE: ""}
_MASKED_NAME = re.compile(r"-mask([0-7])")


@dataclass(frozen=True, order=True)
class Shape:
    kind: Kind
    prefixlen: int = 0  # the mask's length, for MASKED only
    slot: int = 0  # MASKED only: which of the `MASK_SLOTS` sets

    def name(self, base: str) -> str:
        """The set's name: the interval shape keeps the base name (older listings, tests)."""
        if self.kind == Kind.MASKED:
            return f"{base}-mask{self.slot}"
        return base + _SUFFIXES[self.kind]

    @property
    def interval(self) -> bool:
        return self.kind == Kind.RANGE


ANY = Shape(Kind.ANY)
HOST = Shape(Kind.HOST)
RANGE = Shape(Kind.RANGE)
FIXED_SHAPES = (ANY, HOST, RANGE)  # declared whatever the elements, as is every slot


@functools.cache  # one object per shape: each compile asks for every slot several times
def masked(prefixlen: int, slot: int = 0) -> Shape:
    return Shape(Kind.MASKED, prefixlen, slot)


def slot_names(base: str) -> list[str]:
    """Every masked set's name of `base`, used or not (each apply declares and flushes all)."""
    return [masked(0, slot).name(base) for slot in range(MASK_SLOTS)]


def shape_named(base: str, name: str) -> Shape | None:
    """The shape of `base`'s set called `name` (a masked one's length is in its rule, not
    its name: `prefixlen` 0), or None when we never make that name."""
    for shape in FIXED_SHAPES:
        if name == shape.name(base):
            return shape
    if not name.startswith(base):
        return None
    found = _MASKED_NAME.fullmatch(name[len(base) :])
    return None if found is None else masked(0, int(found.group(1)))


def mask_length(family: int, untrusted_mask: str) -> int:
    """The prefix length of a netmask as nft lists it; ValueError if it is not one."""
    address = ipaddress.ip_address(untrusted_mask)
    bits, value = address.max_prefixlen, int(address)
    length = bin(value).count("1")
    if address.version != family or value != ((1 << length) - 1) << (bits - length):
        raise ValueError(f"{untrusted_mask} is not a netmask of family {family}")
    return length


def natural_shape(source: Network, port_range: PortRange) -> Shape:
    """The shape an element takes when its prefix length has a lookup of its own."""
    if len(port_range) != 1:
        return RANGE
    if source.prefixlen == 0:
        return ANY
    if source.prefixlen == source.max_prefixlen:
        return HOST
    return masked(source.prefixlen)


@functools.cache  # 162 texts at most; every compile writes each slot's mask several times
def netmask(family: int, prefixlen: int) -> str:
    zero = "0.0.0.0" if family == 4 else "::"
    return str(ipaddress.ip_network(f"{zero}/{prefixlen}").netmask)


def source_text(shape: Shape, source: Network) -> str | None:
    """The source part of a key: none for `any`, a plain address for `host` and `mask<I>`."""
    # By kind: comparing whole shapes runs the dataclass' and the enum's Python code.
    kind = shape.kind
    if kind == Kind.ANY:
        return None
    if kind == Kind.RANGE:
        return network(source)
    return address_text(source.network_address)


@dataclass(frozen=True)
class Keyed:
    """One element, split in the parts around the source: `before . source . after . ports`."""

    before: tuple[str, ...]
    source: Network
    after: tuple[str, ...]
    ports: PortRange
    value: str | None = None  # a map's value (`goto fwd-…`, a port)

    def text(self, shape: Shape) -> str:
        source = source_text(shape, self.source)
        parts = [*self.before]
        if source is not None:
            parts.append(source)
        parts += self.after
        parts.append(ports(self.ports))
        key = " . ".join(parts)
        return key if self.value is None else f"{key} : {self.value}"


@functools.cache
def slots(family: int, max_masked: int = MAX_MASKED_LENGTHS) -> tuple[Shape, ...]:
    """The masked shapes of `family` in use: the first `max_masked` of its slot lengths."""
    lengths = SLOT_LENGTHS[family][: min(max(max_masked, 0), MASK_SLOTS)]
    return tuple(masked(length, slot) for slot, length in enumerate(lengths))


def shapes_of(items: Sequence[Keyed], max_masked: int = MAX_MASKED_LENGTHS) -> list[Shape]:
    """Each item's shape: its natural one, or `range` when its prefix length has no slot."""
    slotted = {
        family: {shape.prefixlen: shape for shape in slots(family, max_masked)} for family in (4, 6)
    }
    # `natural_shape` inlined: it makes a Shape for every masked element.
    chosen: list[Shape] = []
    for item in items:
        source, port_range = item.source, item.ports
        prefixlen = source.prefixlen
        if port_range.first != port_range.last:
            chosen.append(RANGE)
        elif prefixlen == 0:
            chosen.append(ANY)
        elif prefixlen == source.max_prefixlen:
            chosen.append(HOST)
        else:
            chosen.append(slotted[source.version].get(prefixlen, RANGE))
    return chosen


def by_shape(
    items: Sequence[Keyed], family: int, max_masked: int = MAX_MASKED_LENGTHS
) -> dict[Shape, list[str]]:
    """Element texts per shape, shapes in rule order, elements in the items' order.

    Every shape is there, possibly empty: the fixed ones and each slot in use.
    """
    chosen = shapes_of(items, max_masked)
    found: dict[Shape, list[str]] = {
        shape: [] for shape in [*FIXED_SHAPES, *slots(family, max_masked)]
    }
    # A Shape hashes in Python (its enum field): each distinct object is looked up once.
    texts_of: dict[int, list[str]] = {}
    for item, shape in zip(items, chosen, strict=True):
        texts = texts_of.get(id(shape))
        if texts is None:
            texts = texts_of[id(shape)] = found[shape]
        texts.append(item.text(shape))
    return {shape: found[shape] for shape in sorted(found)}


@dataclass(frozen=True)
class KeyForm:
    """A set's key: its types and its packet expressions, before and after the source."""

    family: int
    before: tuple[tuple[str, str], ...]  # (type, expression)
    source_expression: str  # e.g. `ip saddr`
    after: tuple[tuple[str, str], ...]
    value_type: str | None = None

    def _fields(self, shape: Shape) -> list[tuple[str, str]]:
        expression = self.source_expression
        if shape.kind == Kind.MASKED:
            expression += f" & {netmask(self.family, shape.prefixlen)}"
        source = [] if shape == ANY else [(addr_type(self.family), expression)]
        return [*self.before, *source, *self.after, ("inet_service", "th dport")]

    def declaration(self, kind: str, base: str, shape: Shape, elements: Sequence[str]) -> list[str]:
        """`set|map NAME { type …; flags interval; elements }`, indented for a table body."""
        head = _declaration_head(self, kind, base, shape)
        return [*head, *elements_line(elements, "    "), "  }"]

    def selector(self, shape: Shape) -> str:
        """The packet's key for `shape`: `ip saddr & 255.255.255.0 . meta l4proto . th dport`."""
        return _selector(self, shape)


# Both depend on the key's form and shape alone, a few dozen of them, while every compile
# writes each of them again (most sets are declared whether used or not).
@functools.cache
def _declaration_head(form: KeyForm, kind: str, base: str, shape: Shape) -> tuple[str, ...]:
    key_type = " . ".join(t for t, _ in form._fields(shape))
    value = f" : {form.value_type}" if form.value_type else ""
    return (
        f"  {kind} {shape.name(base)} {{",
        f"    type {key_type}{value}",
        *(["    flags interval"] if shape.interval else []),
    )


@functools.cache
def _selector(form: KeyForm, shape: Shape) -> str:
    return " . ".join(e for _, e in form._fields(shape))


def source_expression(family: int, direction: str = "saddr") -> str:
    return f"{table_family(family)} {direction}"
