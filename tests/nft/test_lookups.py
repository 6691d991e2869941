"""Each element's shape: its natural one when its prefix length has a slot, else `range`."""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.nft.lookups import (
    ANY,
    HOST,
    RANGE,
    Keyed,
    Kind,
    by_shape,
    natural_shape,
    shapes_of,
    slots,
    source_text,
)

sources = st.one_of(
    st.integers(0, 32).map(lambda n: ipaddress.ip_network(f"10.0.0.0/{n}", strict=False)),
    st.integers(0, 128).map(lambda n: ipaddress.ip_network(f"fd00::/{n}", strict=False)),
)
port_ranges = st.tuples(st.integers(1, 100), st.integers(0, 2)).map(
    lambda t: PortRange(t[0], t[0] + t[1])
)
keyed = st.builds(Keyed, st.just(()), sources, st.just(("tcp",)), port_ranges)


@given(st.lists(keyed, max_size=12), st.integers(0, 8))
def test_a_shape_is_the_natural_one_or_range(items: list[Keyed], max_masked: int) -> None:
    chosen = shapes_of(items, max_masked)
    for item, shape in zip(items, chosen, strict=True):
        natural = natural_shape(item.source, item.ports)
        if natural.kind != Kind.MASKED:
            assert shape == natural
            continue
        in_use = {s.prefixlen: s for s in slots(item.source.version, max_masked)}
        assert shape == in_use.get(natural.prefixlen, RANGE)


def test_elements_land_in_their_shapes_in_the_items_order() -> None:
    lan, other_lan = (ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24"))
    host = ipaddress.ip_network("198.51.100.7/32")
    every = ipaddress.ip_network("0.0.0.0/0")
    items = [
        Keyed((), lan, ("tcp",), PortRange(80, 80), "goto a"),
        Keyed((), host, ("udp",), PortRange(81, 81)),
        Keyed((), every, ("tcp",), PortRange(82, 83)),
        Keyed((), other_lan, ("tcp",), PortRange(84, 84)),
        Keyed((), every, ("tcp",), PortRange(85, 85)),
    ]
    found = by_shape(items, 4)
    assert found[ANY] == ["tcp . 85"]
    assert found[HOST] == ["198.51.100.7 . udp . 81"]
    assert found[RANGE] == ["0.0.0.0/0 . tcp . 82-83"]
    [slash24] = [shape for shape in found if shape.kind == Kind.MASKED and shape.prefixlen == 24]
    assert found[slash24] == ["192.0.2.0 . tcp . 80 : goto a", "198.51.100.0 . tcp . 84"]
    assert list(found) == sorted(found)


def test_source_text_by_shape() -> None:
    lan = ipaddress.ip_network("192.0.2.0/24")
    assert source_text(ANY, lan) is None
    assert source_text(RANGE, lan) == "192.0.2.0/24"
    assert source_text(HOST, ipaddress.ip_network("192.0.2.9/32")) == "192.0.2.9"
    assert source_text(slots(4)[0], lan) == "192.0.2.0"
