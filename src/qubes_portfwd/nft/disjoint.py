"""Turn overlapping (key, source network, port range) items into disjoint set elements.

The kernel's concatenated interval sets refuse elements that overlap (EEXIST), while two
forwards may legitimately open the same target port to overlapping sources. The union is
kept exactly: ports are cut at every range boundary, the sources of each piece are
collapsed, and neighbouring pieces with equal sources are merged again.
"""

import ipaddress
import itertools
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..model.hosts import Network
from ..model.ports import PortRange

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Element(Generic[K]):
    key: K
    source: Network
    ports: PortRange


def disjoint_elements(items: Iterable[Element[K]]) -> list[Element[K]]:
    """Elements covering exactly the union of `items`, no two overlapping; order is stable."""
    groups: dict[K, list[Element[K]]] = defaultdict(list)
    for item in items:
        groups[item.key].append(item)
    result: list[Element[K]] = []
    for key in sorted(groups, key=repr):
        result.extend(_disjoint_group(key, groups[key]))
    return result


def collapsed(sources: Sequence[Network]) -> tuple[Network, ...]:
    """`ipaddress.collapse_addresses`, without its sorting and merging for a single network."""
    if len(sources) == 1:
        return (sources[0],)
    return tuple(ipaddress.collapse_addresses(sources))  # type: ignore[type-var]


def _disjoint_group(key: K, items: list[Element[K]]) -> list[Element[K]]:
    ordered = sorted(items, key=lambda item: (item.ports.first, item.ports.last))
    if all(a.ports.last < b.ports.first for a, b in itertools.pairwise(ordered)):
        return _merged_neighbours(key, ordered)
    return _swept(key, items)


def _swept(key: K, items: list[Element[K]]) -> list[Element[K]]:
    """Any items: cut at every range boundary, the sources of each piece collapsed."""
    starts: dict[int, list[Network]] = defaultdict(list)
    ends: dict[int, list[Network]] = defaultdict(list)
    for item in items:
        starts[item.ports.first].append(item.source)
        ends[item.ports.last + 1].append(item.source)
    active: Counter[Network] = Counter()
    pieces: list[tuple[PortRange, tuple[Network, ...]]] = []
    boundaries = sorted(set(starts) | set(ends))
    for here, following in itertools.pairwise(boundaries):
        for source in ends.get(here, ()):
            active[source] -= 1
            if not active[source]:
                del active[source]
        active.update(starts.get(here, ()))
        if not active:
            continue
        sources = collapsed(list(active))
        piece = PortRange(here, following - 1)
        if pieces and pieces[-1][1] == sources and pieces[-1][0].last + 1 == here:
            piece = PortRange(pieces[-1][0].first, piece.last)
            pieces.pop()
        pieces.append((piece, sources))
    return [Element(key, source, piece) for piece, sources in pieces for source in sources]


def _merged_neighbours(key: K, ordered: list[Element[K]]) -> list[Element[K]]:
    """What `_disjoint_group` makes of items whose ports never overlap (one forward a port,
    the common case): each its own piece, neighbours with the same source joined."""
    pieces: list[tuple[PortRange, Network]] = []
    for item in ordered:
        if pieces and pieces[-1][1] == item.source and pieces[-1][0].last + 1 == item.ports.first:
            pieces[-1] = (PortRange(pieces[-1][0].first, item.ports.last), item.source)
        else:
            pieces.append((item.ports, item.source))
    return [Element(key, source, piece) for piece, source in pieces]
