"""Turn overlapping (key, source network, port range) items into disjoint set elements.

The kernel's concatenated interval sets refuse elements that overlap (EEXIST), while two
forwards may legitimately open the same target port to overlapping sources. The union is
kept exactly: ports are cut at every range boundary, the sources of each piece are
collapsed, and neighbouring pieces with equal sources are merged again.
"""

import ipaddress
import itertools
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable
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


def _disjoint_group(key: K, items: list[Element[K]]) -> list[Element[K]]:
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
        sources = tuple(ipaddress.collapse_addresses(active))  # type: ignore[type-var]
        piece = PortRange(here, following - 1)
        if pieces and pieces[-1][1] == sources and pieces[-1][0].last + 1 == here:
            piece = PortRange(pieces[-1][0].first, piece.last)
            pieces.pop()
        pieces.append((piece, sources))
    return [Element(key, source, piece) for piece, sources in pieces for source in sources]
