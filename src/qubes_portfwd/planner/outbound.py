"""Qubes' outbound firewall entries (`/qubes-firewall/<ip>/…`), as Qubes writes them today.

Each network qube gets, for every downstream qube, policy `drop` and that qube's live
accept/drop rules in order, once per address family the downstream qube has. Like Qubes'
`qdb_entries(addr_family)`, a `dst4` rule is left out under the IPv6 address and a `dst6`
rule under the IPv4 one. Unlike Qubes, the numbers stay consecutive (0000, 0001, …) where
rules are left out, as the entries contract (`model.entries.parse_firewall`) requires.
"""

from collections.abc import Mapping, Sequence

from ..model.entries import FirewallEntry, format_firewall
from ..model.rule import FilterRule, QubeName, Rule
from ..model.topology import Topology
from .expiry import is_expired

OUTBOUND_POLICY = "drop"


def live_filter_rules(rules: Sequence[Rule], now: float, boot_id: str) -> tuple[FilterRule, ...]:
    return tuple(
        rule
        for rule in rules
        if isinstance(rule, FilterRule) and not is_expired(rule, now, boot_id)
    )


def _for_family(rules: tuple[FilterRule, ...], family: int) -> tuple[FilterRule, ...]:
    other_type = "dst6" if family == 4 else "dst4"
    return tuple(r for r in rules if r.dsthost is None or r.dsthost.type != other_type)


def outbound_entries(
    rules_of: Mapping[QubeName, Sequence[Rule]], topology: Topology, now: float, boot_id: str
) -> dict[QubeName, dict[str, str]]:
    """The `/qubes-firewall/` entries of every network qube; `rules_of` covers every qube."""
    entries: dict[QubeName, dict[str, str]] = {}
    for netvm in sorted(topology.qubes):
        if not topology[netvm].provides_network:
            continue
        values: dict[str, str] = {}
        for downstream in topology.downstream(netvm):
            live = live_filter_rules(rules_of[downstream.name], now, boot_id)
            for family in (4, 6):
                address = downstream.address(family)
                if address is not None:
                    entry = FirewallEntry(address, OUTBOUND_POLICY, _for_family(live, family))
                    values.update(format_firewall(entry))
        entries[netvm] = values
    return entries
