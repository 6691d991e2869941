"""A network qube's `qubes-firewall` tables from its `/qubes-firewall/` entries, in the shape
the stock worker (`qubesagent/firewall.py`, NftablesWorker) gives them.

`forward` (policy drop: established and non-vif traffic accepted, then `qubes-forward`
jumps to one `qbs-<address>` chain per source), the `dns-addr` set, and the prerouting/
postrouting anti-spoofing of connected addresses. A source whose rules cannot be used ends
in reject, as the worker's fallback to `action=drop` does. Pure: names come in resolved.
"""

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qubes_portfwd.model.hosts import Network
from qubes_portfwd.model.rule import Action, FilterRule
from qubes_portfwd.nft.syntax import (
    addr_type,
    anonymous_set,
    elements_line,
    icmp_keyword,
    icmp_proto,
    qbs_chain,
    recreate_table,
    reject_prohibited,
    table_family,
)

from .entries import FirewallEntry, IPAddress

FIREWALL_TABLE = "qubes-firewall"


@dataclass(frozen=True)
class BlockedSource:
    """A downstream address whose outbound traffic falls back to drop, and why."""

    address: IPAddress
    reason: str


class _Unusable(Exception):
    """A rule that cannot be compiled for its source: the whole source is blocked."""


@dataclass(frozen=True)
class OutboundInputs:
    """Everything one family's `qubes-firewall` table is built from."""

    family: int
    entries: Sequence[FirewallEntry]
    broken: Sequence[IPAddress]
    resolved: Mapping[str, tuple[IPAddress, ...]]
    dns_servers: Sequence[IPAddress]


def firewall_script(
    entries: Sequence[FirewallEntry],
    broken: Sequence[IPAddress],
    resolved: Mapping[str, tuple[IPAddress, ...]],
    dns_servers: Sequence[IPAddress],
) -> tuple[str, list[BlockedSource]]:
    """Both families' tables as one `nft -f` transaction, and the sources it blocks."""
    lines: list[str] = []
    blocked: list[BlockedSource] = []
    for family in (4, 6):
        table, family_blocked = firewall_table(
            OutboundInputs(
                family=family,
                entries=[e for e in entries if e.address.version == family],
                broken=sorted({a for a in broken if a.version == family}),
                resolved=resolved,
                dns_servers=dns_servers,
            )
        )
        lines += table
        blocked += family_blocked
    return "\n".join(lines) + "\n", blocked


def firewall_table(inputs: OutboundInputs) -> tuple[list[str], list[BlockedSource]]:
    """The whole table for one family (rebuilt in the transaction) and the blocked sources."""
    family = inputs.family
    ip = table_family(family)
    addr = addr_type(family)
    dns = sorted({d for d in inputs.dns_servers if d.version == family})
    blocked = [BlockedSource(a, "its firewall entry could not be parsed") for a in inputs.broken]
    chains: dict[IPAddress, list[str]] = {}
    for entry in inputs.entries:
        if entry.address in chains or entry.address in inputs.broken:
            continue
        try:
            chains[entry.address] = _source_rules(entry, inputs.resolved, dns)
        except _Unusable as err:
            blocked.append(BlockedSource(entry.address, str(err)))
    for source in blocked:
        chains[source.address] = [reject_prohibited(family)]
    spoofed: list[str] = []
    misrouted: list[str] = []
    if chains:
        connected = anonymous_set(str(a) for a in sorted(chains))
        spoofed = [f'iifname != "vif*" {ip} saddr {connected} drop']
        misrouted = [f'oifname != "vif*" {ip} daddr {connected} drop']
    lines = [
        *recreate_table(family, FIREWALL_TABLE),
        f"table {ip} {FIREWALL_TABLE} {{",
        "  set dns-addr {",
        f"    type {addr}",
        *elements_line([str(d) for d in dns], "    "),
        "  }",
        "  chain qubes-forward {",
        *(f"    {ip} saddr {a} jump {qbs_chain(a)}" for a in sorted(chains)),
        "  }",
        "  chain forward {",
        "    type filter hook forward priority 0; policy drop;",
        "    ct state established,related accept",
        '    meta iifname != "vif*" accept',
        "    jump qubes-forward",
        "  }",
        "  chain prerouting {",
        "    type filter hook prerouting priority -300; policy accept;",
        *(f"    {r}" for r in spoofed),
        "  }",
        "  chain postrouting {",
        "    type filter hook postrouting priority -300; policy accept;",
        *(f"    {r}" for r in misrouted),
        "  }",
    ]
    for address in sorted(chains):
        lines += [f"  chain {qbs_chain(address)} {{", *(f"    {r}" for r in chains[address]), "  }"]
    return [*lines, "}"], blocked


def _source_rules(
    entry: FirewallEntry, resolved: Mapping[str, tuple[IPAddress, ...]], dns: list[IPAddress]
) -> list[str]:
    family = entry.address.version
    rules = [r for rule in entry.rules for r in _rule(rule, family, resolved, dns)]
    final = "accept" if entry.policy == "accept" else reject_prohibited(family)
    return [*rules, final]


def _destinations(
    rule: FilterRule, family: int, resolved: Mapping[str, tuple[IPAddress, ...]]
) -> list[Network] | None:
    """The destinations a rule names; None when it names none."""
    if rule.dsthost is None:
        return None
    if rule.dsthost.network is not None:
        if rule.dsthost.network.version != family:
            raise _Unusable(f"{rule.dsthost.type}={rule.dsthost.text} is not IPv{family}")
        return [rule.dsthost.network]
    found = sorted({a for a in resolved.get(rule.dsthost.text, ()) if a.version == family})
    if not found:
        raise _Unusable(f"dsthost={rule.dsthost.text} did not resolve to an IPv{family} address")
    return [ipaddress.ip_network(a) for a in found]


def _rule(
    rule: FilterRule,
    family: int,
    resolved: Mapping[str, tuple[IPAddress, ...]],
    dns: list[IPAddress],
) -> list[str]:
    """One Qubes rule as nft rules (a DNS rule becomes one per protocol, or none at all)."""
    ip = table_family(family)
    verdict = "accept" if rule.action == Action.ACCEPT else reject_prohibited(family)
    destinations = _destinations(rule, family, resolved)
    if rule.specialtarget == "dns":
        if rule.dstports is not None and (rule.dstports.first, rule.dstports.last) != (53, 53):
            return []
        protos = [p for p in ("tcp", "udp") if rule.proto in (None, p)]
        servers = [d for d in dns if destinations is None or any(d in n for n in destinations)]
        if not servers or not protos:
            return []
        target = "@dns-addr" if destinations is None else anonymous_set(str(d) for d in servers)
        return [f"meta l4proto {p} {ip} daddr {target} {p} dport 53 {verdict}" for p in protos]
    parts = []
    if rule.proto is not None:
        parts.append(f"meta l4proto {icmp_proto(family) if rule.proto == 'icmp' else rule.proto}")
    if destinations is not None:
        parts.append(f"{ip} daddr {anonymous_set(str(n) for n in destinations)}")
    if rule.dstports is not None:
        parts.append(f"{rule.proto} dport {rule.dstports.short}")
    if rule.icmptype is not None:
        parts.append(f"{icmp_keyword(family)} type {rule.icmptype}")
    return [" ".join([*parts, verdict])]
