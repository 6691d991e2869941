"""Hypothesis strategies: random qube networks and random valid forwards over them.

Ports come from a small pool so that forwards often collide; netvm links sometimes point at
missing or non-network qubes so that paths break.
"""

import ipaddress
from typing import TypeVar

from hypothesis import strategies as st

from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.model.rule import (
    Action,
    ExpireAt,
    FilterRule,
    ForwardRule,
    ForwardType,
    Rule,
    Source,
    UntilReboot,
)
from qubes_portfwd.model.topology import PathError, Qube, Topology

NOW = 1_000_000.0
BOOT = "b007"
MISSING = "ghost"
T = TypeVar("T")

V4_SOURCES = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Network("192.0.2.0/24"))
V6_SOURCES = (ipaddress.IPv6Network("::/0"), ipaddress.IPv6Network("2001:db8::/32"))


def _mostly(draw: st.DrawFn, usual: T, *rare: T, percent: int = 85) -> T:
    """`usual` in `percent` % of draws, else one of `rare`: keeps most forwards plannable."""
    if not rare or draw(st.integers(1, 100)) <= percent:
        return usual
    return draw(st.sampled_from(rare))


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    net_count = draw(st.integers(1, 5))
    net_names = [f"net{i}" for i in range(net_count)]
    qubes = []
    for index, name in enumerate(net_names):
        netvm = None
        if index:
            linked = draw(st.sampled_from(net_names[:index]))
            netvm = _mostly(draw, linked, None, MISSING, percent=80)
        features = {}
        if draw(st.booleans()):
            features["ipv6"] = "1"
        if netvm is not None and draw(st.integers(0, 3)) == 0:
            features["portfwd-tunnel"] = "1"
        if draw(st.integers(0, 3)) == 0:
            features["portfwd-uplink"] = draw(st.sampled_from(["wg0", "tun0", "eth1"]))
        provides = _mostly(draw, True, False, percent=95)
        qubes.append(
            Qube(name, 2 + index, netvm=netvm, provides_network=provides, features=features)
        )
    for index in range(draw(st.integers(1, 5))):
        netvm = _mostly(draw, draw(st.sampled_from(net_names)), None, MISSING)
        features = {"ipv6": "1"} if draw(st.booleans()) else {}
        qubes.append(Qube(f"app{index}", 20 + index, netvm=netvm, features=features))
    return Topology.of(*qubes)


def _current_path(topology: Topology, target: str, forwardtype: ForwardType) -> tuple[str, ...]:
    try:
        path = topology.path(target)
    except (PathError, KeyError):
        return ()
    return path[:1] if forwardtype == ForwardType.INTERNAL else path


@st.composite
def forward_rules(draw: st.DrawFn, topology: Topology, target: str) -> ForwardRule:
    forwardtype = draw(st.sampled_from(ForwardType))
    first = draw(st.integers(1, 12))
    length = draw(st.integers(1, 3))
    to_first = draw(st.integers(1, 12))
    srcports = PortRange(first, first + length - 1)
    dstports = PortRange(to_first, to_first + length - 1)
    names = sorted(topology.qubes)
    srchost: tuple[Source, ...]
    if forwardtype == ForwardType.EXTERNAL:
        pool = draw(st.sampled_from([V4_SOURCES, V6_SOURCES]))
        srchost = tuple(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True)))
    else:
        netvm = topology[target].netvm if target in topology else None
        siblings = [q.name for q in topology.downstream(netvm)] if netvm else []
        anyone = [*names, MISSING]
        pool = _mostly(draw, siblings, anyone) if siblings else anyone
        srchost = tuple(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)))
    via_choice = _mostly(draw, "none", "current", "current", "follow", "random", percent=40)
    via = None
    if via_choice == "current":
        via = _current_path(topology, target, forwardtype) or None
    elif via_choice == "random":
        via = tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)))
    expire = draw(
        st.sampled_from(
            [
                None,
                ExpireAt(int(NOW) - 5),
                ExpireAt(int(NOW) + 5),
                UntilReboot(BOOT),
                UntilReboot("old"),
            ]
        )
    )
    return ForwardRule(
        forwardtype,
        srcports,
        dstports,
        srchost,
        proto=draw(st.sampled_from([None, "tcp", "udp"])),
        via=via,
        follow=via_choice == "follow",
        expire=expire,
    )


@st.composite
def rule_sets(draw: st.DrawFn, topology: Topology) -> dict[str, list[Rule]]:
    """Rule lists for some qubes of `topology` (and a qube that does not exist)."""
    result: dict[str, list[Rule]] = {}
    for target in [*sorted(topology.qubes), MISSING]:
        if draw(st.integers(0, 3)) == 0:
            continue  # Qubes' default list
        listed: list[Rule] = [FilterRule(Action.ACCEPT)] if draw(st.booleans()) else []
        listed += draw(st.lists(forward_rules(topology, target), max_size=4))
        result[target] = listed
    return result


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Topology, dict[str, list[Rule]]]:
    topology = draw(topologies())
    return topology, draw(rule_sets(topology))
