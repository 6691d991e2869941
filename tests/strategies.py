"""Hypothesis strategies for the model's values, shared by every layer's tests.

Every strategy yields only valid values, built the way the parsers build them, so
`parse_rule(format_rule(rule)) == rule` is expected to hold for each of them.
"""

import ipaddress
import string

from hypothesis import settings
from hypothesis import strategies as st

from qubes_lab.qubes_firewall.entries import FirewallEntry
from qubes_portfwd.model.entries import DOWNSTREAM, AcceptHop, DnatHop
from qubes_portfwd.model.hosts import DstHost, Network, parse_dsthost
from qubes_portfwd.model.ports import PortRange
from qubes_portfwd.model.rule import (
    Action,
    ExpireAt,
    Expiry,
    FilterRule,
    ForwardRule,
    ForwardType,
    Rule,
    UntilReboot,
)
from qubes_portfwd.model.rule_text import COMMENT_CHARS
from qubes_portfwd.model.topology import FEATURE_IPV6, FEATURE_TUNNEL, Qube, Topology

MAX_TIMESTAMP = 2**40
# Hypothesis' per-example deadline is a timed assertion; on a loaded machine it fails at random.
untimed = settings(deadline=None)

_QUBE_NAME_TAIL = string.ascii_letters + string.digits + "_.-"
qube_names = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters),
    st.text(alphabet=_QUBE_NAME_TAIL, max_size=30),
)
boot_ids = st.text(alphabet=string.hexdigits.lower() + "-", min_size=1, max_size=36)
comments = st.text(alphabet=sorted(COMMENT_CHARS), min_size=1, max_size=60)
timestamps = st.integers(min_value=0, max_value=MAX_TIMESTAMP)


@st.composite
def port_ranges(draw: st.DrawFn, lowest: int = 1, length: int | None = None) -> PortRange:
    """Any range within lowest-65535; `length` fixes how many ports it holds."""
    if length is None:
        first = draw(st.integers(lowest, 65535))
        return PortRange(first, draw(st.integers(first, 65535)))
    first = draw(st.integers(lowest, 65536 - length))
    return PortRange(first, first + length - 1)


def networks(version: int | None = None) -> st.SearchStrategy[Network]:
    """Strict networks (host bits zero), as forward sources are."""
    v4 = st.builds(
        lambda address, prefix: ipaddress.IPv4Network((address, prefix), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    )
    v6 = st.builds(
        lambda address, prefix: ipaddress.IPv6Network((address, prefix), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    )
    return {4: v4, 6: v6}.get(version, st.one_of(v4, v6))  # type: ignore[arg-type]


_dns_names = st.text(
    alphabet=string.ascii_lowercase + string.digits + "._-", min_size=1, max_size=60
)


@st.composite
def _address_texts(draw: st.DrawFn) -> str:
    version = draw(st.sampled_from((4, 6)))
    if version == 4:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            draw(st.integers(0, 2**32 - 1))
        )
    else:
        address = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
    text = draw(st.sampled_from((str(address), address.exploded)))
    if draw(st.booleans()):
        return text  # a bare address: the parser adds the full prefix
    return f"{text}/{draw(st.integers(0, address.max_prefixlen))}"


def dsthosts() -> st.SearchStrategy[DstHost]:
    """Destinations as Qubes keeps them: addresses with a prefix (host bits allowed), names."""
    texts = st.one_of(_address_texts(), _dns_names.filter(lambda n: not _is_ip(n)))
    return texts.map(lambda text: parse_dsthost("dsthost", text))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@st.composite
def filter_rules(draw: st.DrawFn) -> FilterRule:
    """Any valid accept/drop rule."""
    proto = draw(st.sampled_from((None, "tcp", "udp", "icmp")))
    dstports = None
    if proto in ("tcp", "udp"):
        dstports = draw(st.none() | port_ranges(lowest=0))
    icmptype = draw(st.none() | st.integers(0, 255)) if proto == "icmp" else None
    return FilterRule(
        action=draw(st.sampled_from((Action.ACCEPT, Action.DROP))),
        proto=proto,
        dsthost=draw(st.none() | dsthosts()),
        dstports=dstports,
        icmptype=icmptype,
        specialtarget=draw(st.sampled_from((None, "dns"))),
        expire=draw(st.none() | timestamps.map(ExpireAt)),
        comment=draw(st.none() | comments),
    )


def expiries(bound: bool = False) -> st.SearchStrategy[Expiry]:
    """Forward expiries; `bound` leaves out `boot` not yet tied to a boot id."""
    reboot = boot_ids.map(UntilReboot)
    if not bound:
        reboot = reboot | st.just(UntilReboot(None))
    return st.one_of(timestamps.map(ExpireAt), reboot)


@st.composite
def forward_rules(
    draw: st.DrawFn, forwardtype: ForwardType | None = None, bound: bool = False
) -> ForwardRule:
    """Any valid forward; `bound`: its expiry is storable in firewall.xml as it is."""
    kind = forwardtype or draw(st.sampled_from(tuple(ForwardType)))
    srcports = draw(port_ranges())
    dstports = draw(port_ranges(length=len(srcports)))
    if kind == ForwardType.EXTERNAL:
        version = draw(st.sampled_from((4, 6)))
        sources: tuple[Network | str, ...] = tuple(
            draw(st.lists(networks(version), min_size=1, max_size=4, unique=True))
        )
    else:
        sources = tuple(draw(st.lists(qube_names, min_size=1, max_size=4, unique=True)))
    via = draw(st.none() | st.lists(qube_names, min_size=1, max_size=4).map(tuple))
    return ForwardRule(
        forwardtype=kind,
        srcports=srcports,
        dstports=dstports,
        srchost=sources,
        proto=draw(st.sampled_from((None, "tcp", "udp"))),
        via=via,
        follow=draw(st.booleans()) if via is None else False,
        expire=draw(st.none() | expiries(bound)),
        comment=draw(st.none() | comments),
    )


def rules(bound: bool = False) -> st.SearchStrategy[Rule]:
    return st.one_of(filter_rules(), forward_rules(bound=bound))


@st.composite
def topologies(draw: st.DrawFn, max_network: int = 5, max_apps: int = 6) -> Topology:
    """A well-formed host: sys-net, network qubes behind it (some tunnels), app qubes.

    Every netvm exists and provides network, so `path()` succeeds for every app qube
    that has a netvm; qids are unique.
    """
    qids = iter(range(1, 1 + 1 + max_network + max_apps))
    network = [Qube("sys-net", next(qids), provides_network=True)]
    for index in range(draw(st.integers(0, max_network))):
        features = {FEATURE_TUNNEL: "1"} if draw(st.booleans()) else {}
        if draw(st.booleans()):
            features[FEATURE_IPV6] = "1"
        upstream = draw(st.sampled_from([q.name for q in network]))
        network.append(
            Qube(
                f"net{index}", next(qids), netvm=upstream, provides_network=True, features=features
            )
        )
    apps = []
    for index in range(draw(st.integers(1, max_apps))):
        netvm = draw(st.none() | st.sampled_from([q.name for q in network]))
        dispid = draw(st.none() | st.integers(1, 9999))
        ipv6 = {FEATURE_IPV6: "1"} if draw(st.booleans()) else {}
        apps.append(Qube(f"app{index}", next(qids), netvm=netvm, dispid=dispid, features=ipv6))
    return Topology.of(*network, *apps)


forward_ids = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12)
interfaces = st.text(alphabet=_QUBE_NAME_TAIL, min_size=1, max_size=15)
_proto_lists = st.sampled_from((("tcp",), ("udp",), ("tcp", "udp")))


def addresses(version: int) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if version == 4:
        return st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
    return st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def dnat_hops(draw: st.DrawFn) -> DnatHop:
    family = draw(st.sampled_from((4, 6)))
    ports = draw(port_ranges())
    return DnatHop(
        forward_id=draw(forward_ids),
        family=family,
        protos=draw(_proto_lists),
        inbound=draw(interfaces | st.just(DOWNSTREAM)),
        ports=ports,
        to=draw(addresses(family)),
        toports=draw(port_ranges(length=len(ports))),
        sources=tuple(draw(st.lists(networks(family), min_size=1, max_size=4))),
    )


@st.composite
def accept_hops(draw: st.DrawFn) -> AcceptHop:
    family = draw(st.sampled_from((4, 6)))
    return AcceptHop(
        forward_id=draw(forward_ids),
        family=family,
        protos=draw(_proto_lists),
        ports=draw(port_ranges()),
        sources=tuple(draw(st.lists(networks(family), min_size=1, max_size=4))),
    )


@st.composite
def firewall_entries(draw: st.DrawFn) -> FirewallEntry:
    """A downstream qube's outbound firewall, as QubesDB holds it (no expire, no comment)."""
    qdb_rules = st.builds(
        lambda rule: FilterRule(
            rule.action, rule.proto, rule.dsthost, rule.dstports, rule.icmptype, rule.specialtarget
        ),
        filter_rules(),
    )
    return FirewallEntry(
        address=draw(addresses(draw(st.sampled_from((4, 6))))),
        policy=draw(st.sampled_from(("accept", "drop"))),
        rules=tuple(draw(st.lists(qdb_rules, max_size=12))),
    )
