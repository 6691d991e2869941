"""Which lookup an element goes to: an exact (hash) one when it can, an interval one if it must.

nft keeps a concatenated set with intervals as pipapo, whose per-packet cost grows with its
element count (bench: ~0.05 us per element, 500 us per new connection at 10,000 forwards);
a set without intervals is a hash table, one lookup whatever its size. So every set or map
of ours comes in three shapes, each with its own rule: `any` (source all addresses, one
port: the source is left out of the key), `host` (one source address, one port) and
`range` (a source network or several ports: the interval form, under the original name).
The union of the three holds exactly the elements the interval set alone would hold.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..model.hosts import Network
from ..model.ports import PortRange
from .syntax import addr_type, elements_line, network, ports, table_family


class Shape(Enum):
    ANY = "-any"
    HOST = "-host"
    RANGE = ""

    def name(self, base: str) -> str:
        """The set's name: the interval shape keeps the base name (older listings, tests)."""
        return base + self.value


SHAPES = (Shape.ANY, Shape.HOST, Shape.RANGE)


def shape_of(source: Network, port_range: PortRange) -> Shape:
    if len(port_range) != 1:
        return Shape.RANGE
    if source.prefixlen == 0:
        return Shape.ANY
    if source.prefixlen == source.max_prefixlen:
        return Shape.HOST
    return Shape.RANGE


def source_text(shape: Shape, source: Network) -> str | None:
    """The source part of a key: none for `any`, a plain address for `host`."""
    if shape == Shape.ANY:
        return None
    if shape == Shape.HOST:
        return str(source.network_address)
    return network(source)


@dataclass(frozen=True)
class Keyed:
    """One element, split in the parts around the source: `before . source . after . ports`."""

    before: tuple[str, ...]
    source: Network
    after: tuple[str, ...]
    ports: PortRange
    value: str | None = None  # a map's value (`goto fwd-…`, a port)

    @property
    def shape(self) -> Shape:
        return shape_of(self.source, self.ports)

    def text(self) -> str:
        source = source_text(self.shape, self.source)
        parts = [*self.before, *([source] if source is not None else []), *self.after]
        key = " . ".join([*parts, ports(self.ports)])
        return key if self.value is None else f"{key} : {self.value}"


def by_shape(items: Sequence[Keyed]) -> dict[Shape, list[str]]:
    """Element texts per shape, in the items' order."""
    found: dict[Shape, list[str]] = {shape: [] for shape in SHAPES}
    for item in items:
        found[item.shape].append(item.text())
    return found


@dataclass(frozen=True)
class KeyForm:
    """A set's key: its types and its packet expressions, before and after the source."""

    family: int
    before: tuple[tuple[str, str], ...]  # (type, expression)
    source_expression: str  # e.g. `ip saddr`
    after: tuple[tuple[str, str], ...]
    value_type: str | None = None

    def _fields(self, shape: Shape) -> list[tuple[str, str]]:
        source = [] if shape == Shape.ANY else [(addr_type(self.family), self.source_expression)]
        return [*self.before, *source, *self.after, ("inet_service", "th dport")]

    def declaration(self, kind: str, base: str, shape: Shape, elements: Sequence[str]) -> list[str]:
        """`set|map NAME { type …; flags interval; elements }`, indented for a table body."""
        key_type = " . ".join(t for t, _ in self._fields(shape))
        value = f" : {self.value_type}" if self.value_type else ""
        return [
            f"  {kind} {shape.name(base)} {{",
            f"    type {key_type}{value}",
            *(["    flags interval"] if shape == Shape.RANGE else []),
            *elements_line(elements, "    "),
            "  }",
        ]

    def selector(self, shape: Shape) -> str:
        """The packet's key for `shape`: `ip saddr . meta l4proto . th dport`."""
        return " . ".join(e for _, e in self._fields(shape))


def source_expression(family: int, direction: str = "saddr") -> str:
    return f"{table_family(family)} {direction}"
