"""One qube's entries to one nft script: a single transaction that replaces all we own.

Owned: tables `ip|ip6 qubes-portfwd` (rebuilt), chains `portfwd-forward`/`portfwd-input`
and their sets inside `qubes` (flushed and refilled), our jump rules in `custom-forward`/
`custom-input` (deleted by handle and added again) and, in a network qube, the whole
`ip|ip6 qubes-firewall` tables (rebuilt; the agent replaces Qubes' firewall service).
Nothing else is touched.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model.entries import FirewallEntry, Hop
from .forwards import (
    SkippedHop,
    delete_jumps,
    forward_elements,
    nat_table,
    qubes_accepts,
    select_hops,
)
from .outbound import BlockedSource, OutboundInputs, firewall_table
from .owned import OwnedJumps
from .ssdp_reply import SsdpReply, ssdp_reply_rules
from .syntax import FAMILIES, IPAddress


@dataclass(frozen=True)
class QubeRules:
    """What one qube applies: its hops and, in a network qube, its downstream firewall.

    `resolved` holds the addresses the agent found for dsthost names; `dns_servers` are the
    qube's own resolvers (Qubes' `dns-addr`); `broken_sources` are downstream addresses
    whose firewall entries could not be parsed (they end in drop); `interface_addresses`
    are the qube's own addresses by interface (for hairpin, see `hairpin.py`).
    """

    hops: tuple[Hop, ...] = ()
    network_qube: bool = False
    firewall: tuple[FirewallEntry, ...] = ()
    broken_sources: tuple[IPAddress, ...] = ()
    resolved: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    dns_servers: tuple[IPAddress, ...] = ()
    interface_addresses: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    ssdp_replies: tuple[SsdpReply, ...] = ()  # the netvm's natd may answer M-SEARCH


@dataclass(frozen=True)
class CompiledRules:
    """The script for `nft -f -`, and what it had to leave out or block."""

    script: str
    skipped: tuple[SkippedHop, ...]
    blocked: tuple[BlockedSource, ...]


def compile_qube(rules: QubeRules, owned: OwnedJumps) -> CompiledRules:
    """Deterministic: the same rules and owned state give the same script."""
    hops, skipped = select_hops(rules.hops, owned.base_families)
    lines = ["#!/usr/sbin/nft -f", "# qubes-portfwd: generated, replaced whole on each apply"]
    lines += delete_jumps(owned)
    for family in FAMILIES:
        lines += nat_table(family, hops, rules.interface_addresses)
    for family in sorted(owned.base_families):
        lines += qubes_accepts(family, hops)
    lines += ssdp_reply_rules(rules.ssdp_replies, owned.base_families)
    blocked: list[BlockedSource] = []
    if rules.network_qube:
        for family in FAMILIES:
            table, family_blocked = firewall_table(
                OutboundInputs(
                    family=family,
                    entries=[e for e in rules.firewall if e.address.version == family],
                    broken=sorted({a for a in rules.broken_sources if a.version == family}),
                    resolved=rules.resolved,
                    dns_servers=rules.dns_servers,
                    internal_elements=forward_elements(family, hops, internal_only=True),
                )
            )
            lines += table
            blocked += family_blocked
    return CompiledRules("\n".join(lines) + "\n", tuple(skipped), tuple(blocked))
