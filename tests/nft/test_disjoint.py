"""Disjoint set elements keep exactly the union of what overlapping forwards allow."""

import ipaddress
import random

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.nft.disjoint import Element, _swept, collapsed, disjoint_elements

# A small world so that overlaps are frequent: 10.0.0.0/29 and ports 1-12.
networks = st.builds(
    lambda host, prefix: ipaddress.ip_network(f"10.0.0.{host}/{prefix}", strict=False),
    st.integers(0, 7),
    st.integers(29, 32),
)
ranges = st.tuples(st.integers(1, 12), st.integers(0, 4)).map(
    lambda t: PortRange(t[0], min(t[0] + t[1], 12))
)
items = st.lists(st.builds(Element, st.sampled_from(["tcp", "udp"]), networks, ranges), max_size=8)


def covers(elements: list[Element[str]], key: str, host: int, port: int) -> bool:
    address = ipaddress.ip_address(f"10.0.0.{host}")
    return any(e.key == key and address in e.source and port in e.ports for e in elements)


@given(items)
def test_same_union(given_items: list[Element[str]]) -> None:
    result = disjoint_elements(given_items)
    for key in ("tcp", "udp"):
        for host in range(8):
            for port in range(1, 13):
                assert covers(result, key, host, port) == covers(given_items, key, host, port)


@given(items)
def test_no_two_elements_overlap(given_items: list[Element[str]]) -> None:
    result = disjoint_elements(given_items)
    for n, first in enumerate(result):
        for second in result[n + 1 :]:
            assert not (
                first.key == second.key
                and first.source.overlaps(second.source)
                and first.ports.overlaps(second.ports)
            ), (first, second)


def test_adjacent_ranges_with_the_same_sources_merge() -> None:
    any4 = ipaddress.ip_network("0.0.0.0/0")
    result = disjoint_elements(
        [Element("tcp", any4, PortRange(80, 84)), Element("tcp", any4, PortRange(85, 90))]
    )
    assert result == [Element("tcp", any4, PortRange(80, 90))]


def _laid_apart(drawn: list[tuple[ipaddress.IPv4Network, int, int]]) -> list[Element[str]]:
    """One item after the other, each `gap` ports after the last (0: touching)."""
    placed, first = [], 1
    for source, length, gap in drawn:
        first += gap
        placed.append(Element("tcp", source, PortRange(first, first + length)))
        first += length + 1
    return placed


# Items whose port ranges never overlap: each forward its own ports, as at a network qube.
apart = st.lists(
    st.tuples(networks, st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=8
).map(_laid_apart)


@given(apart, st.randoms())
def test_items_apart_give_what_the_sweep_gives(
    given_items: list[Element[str]], rnd: random.Random
) -> None:
    shuffled = list(given_items)
    rnd.shuffle(shuffled)
    assert disjoint_elements(shuffled) == _swept("tcp", given_items)


def test_neighbours_apart_merge_only_with_the_same_source() -> None:
    lan = ipaddress.ip_network("192.0.2.0/24")
    host = ipaddress.ip_network("198.51.100.7/32")
    result = disjoint_elements(
        [
            Element("tcp", lan, PortRange(82, 82)),
            Element("tcp", lan, PortRange(80, 81)),
            Element("tcp", host, PortRange(83, 83)),
            Element("tcp", lan, PortRange(85, 85)),
        ]
    )
    assert result == [
        Element("tcp", lan, PortRange(80, 82)),
        Element("tcp", host, PortRange(83, 83)),
        Element("tcp", lan, PortRange(85, 85)),
    ]


@given(st.lists(networks, min_size=1, max_size=4))
def test_collapsed_is_collapse_addresses(sources: list[ipaddress.IPv4Network]) -> None:
    assert collapsed(sources) == tuple(ipaddress.collapse_addresses(sources))
