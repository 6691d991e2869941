"""One forward's path, hops and entries in each family, before conflicts are settled.

A draft is either planned (entries for every hop) or inactive with the reason; conflicts
between forwards are decided afterwards, over all drafts (see `settle.py`).
"""

import ipaddress
from dataclasses import dataclass

from ..model.entries import DOWNSTREAM, AcceptHop, DnatHop, Hop, forward_key
from ..model.hosts import Network
from ..model.rule import ForwardRule, ForwardType, QubeName, forward_id
from ..model.topology import PathError
from .network_facts import NetworkFacts
from .values import HopRole, PlannedHop

# In Qubes a network qube's link to its own netvm is always eth0; only an edge's uplink
# (a tunnel interface) can differ.
UPSTREAM_INTERFACE = "eth0"


@dataclass(frozen=True, slots=True)
class Draft:
    """A forward in one family: its hops, and its entries unless `reason` makes it inactive."""

    forward_id: str
    target: QubeName
    position: int
    rule: ForwardRule
    family: int
    hops: tuple[PlannedHop, ...]
    entries: tuple[tuple[QubeName, Hop], ...]
    reason: str | None

    @property
    def key(self) -> str:
        """The key its entries have on every qube (one string, not one per entry)."""
        return self.hops[-1].key


def draft_forward(
    target: QubeName, position: int, rule: ForwardRule, facts: NetworkFacts
) -> tuple[Draft, ...]:
    """The drafts of one forward rule of `target`: one per IP family it is planned for."""
    ident = forward_id(target, rule)

    def draft(
        family: int,
        hops: tuple[PlannedHop, ...],
        reason: str | None,
        entries: tuple[tuple[QubeName, Hop], ...] = (),
    ) -> Draft:
        return Draft(ident, target, position, rule, family, hops, entries, reason)

    if target not in facts:
        return (draft(_first_family(rule), (), f"qube {target} does not exist"),)
    try:
        path = _network_path(target, rule, facts)
    except PathError as err:
        target_only = (PlannedHop(target, HopRole.TARGET, forward_key(ident, _first_family(rule))),)
        return (draft(_first_family(rule), target_only, str(err)),)
    drafts = []
    for family in _families(target, rule, path, facts):
        hops = _hops(ident, family, target, rule, path)
        reason = _inactive_reason(target, rule, family, path, facts)
        if reason is not None:
            drafts.append(draft(family, hops, reason))
            continue
        sources = _sources(rule, family, facts)
        drafts.append(
            draft(family, hops, None, _entries(ident, family, rule, hops, sources, facts))
        )
    return tuple(drafts)


def _first_family(rule: ForwardRule) -> int:
    return rule.families[0]


def _network_path(target: QubeName, rule: ForwardRule, facts: NetworkFacts) -> tuple[str, ...]:
    """The network qubes a forward passes, target's netvm first (internal: the netvm only)."""
    if rule.forwardtype == ForwardType.EXTERNAL:
        return facts.path(target)
    netvm = facts[target].netvm
    if netvm is None:
        raise PathError(f"{target} has no netvm")
    if netvm not in facts:
        raise PathError(f"netvm {netvm} of {target} does not exist")
    if not facts[netvm].provides_network:
        raise PathError(f"{netvm} does not provide network")
    return (netvm,)


def _families(
    target: QubeName, rule: ForwardRule, path: tuple[str, ...], facts: NetworkFacts
) -> tuple[int, ...]:
    """External: the family of srchost. Internal: IPv4, and IPv6 where it can work at all."""
    if rule.forwardtype == ForwardType.EXTERNAL:
        return (_first_family(rule),)
    ipv6_ready = (
        facts.address(path[0], 6) is not None
        and facts.address(target, 6) is not None
        and bool(_sources(rule, 6, facts))
    )
    return (4, 6) if ipv6_ready else (4,)


def _hops(
    ident: str, family: int, target: QubeName, rule: ForwardRule, path: tuple[str, ...]
) -> tuple[PlannedHop, ...]:
    key = forward_key(ident, family)
    outside_in = tuple(reversed(path))
    hops = []
    for index, qube in enumerate(outside_in):
        if rule.forwardtype == ForwardType.INTERNAL:
            role = HopRole.NETVM
        elif index == 0:
            role = HopRole.EDGE
        elif index == len(outside_in) - 1:
            role = HopRole.NETVM
        else:
            role = HopRole.MIDDLE
        hops.append(PlannedHop(qube, role, key))
    hops.append(PlannedHop(target, HopRole.TARGET, key))
    return tuple(hops)


def _inactive_reason(
    target: QubeName, rule: ForwardRule, family: int, path: tuple[str, ...], facts: NetworkFacts
) -> str | None:
    if rule.via is not None and not rule.follow and rule.via != path:
        return (
            f"the netvm path changed: made for via={','.join(rule.via)}, now "
            f"{','.join(path)}; rebind it to the new path or let it follow netvm changes"
        )
    if rule.forwardtype == ForwardType.INTERNAL:
        for name in rule.source_qubes:
            if name not in facts:
                return f"source qube {name} does not exist"
            if facts[name].netvm != path[0]:
                actual = facts[name].netvm or "none"
                return f"source qube {name} is not behind {path[0]} (its netvm is {actual})"
    without_address = [q for q in (*path, target) if facts.address(q, family) is None]
    if without_address:
        return f"IPv{family} forward, but {', '.join(without_address)} has no IPv{family}"
    if not _sources(rule, family, facts):
        return f"no IPv{family} source to allow in srchost"
    return None


def _sources(rule: ForwardRule, family: int, facts: NetworkFacts) -> tuple[Network, ...]:
    """Who may connect: networks as written, named qubes resolved to their own address."""
    networks = [n for n in rule.source_networks if n.version == family]
    for name in rule.source_qubes:
        address = facts.address(name, family)
        if address is not None:
            networks.append(ipaddress.ip_network(address))
    return tuple(dict.fromkeys(networks))


def _entries(
    ident: str,
    family: int,
    rule: ForwardRule,
    hops: tuple[PlannedHop, ...],
    sources: tuple[Network, ...],
    facts: NetworkFacts,
) -> tuple[tuple[QubeName, Hop], ...]:
    """Each network hop DNATs to the next one inward; the target accepts `dstports`."""
    entries: list[tuple[QubeName, Hop]] = []
    network_hops, target = hops[:-1], hops[-1]
    for index, hop in enumerate(network_hops):
        inward = hops[index + 1]
        if rule.forwardtype == ForwardType.INTERNAL:
            inbound = DOWNSTREAM
        elif hop.role == HopRole.EDGE:
            inbound = facts[hop.qube].uplink
        else:
            inbound = UPSTREAM_INTERFACE
        to = facts.address(inward.qube, family)
        assert to is not None  # _inactive_reason checked every hop's address
        toports = rule.dstports if inward.role == HopRole.TARGET else rule.srcports
        dnat = DnatHop(ident, family, rule.protos, inbound, rule.srcports, to, toports, sources)
        entries.append((hop.qube, dnat))
    accept = AcceptHop(ident, family, rule.protos, rule.dstports, sources)
    entries.append((target.qube, accept))
    return tuple(entries)
