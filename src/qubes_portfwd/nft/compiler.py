"""One qube's entries to one nft script: a single transaction that replaces all we own.

Owned: tables `ip|ip6 qubes-portfwd` (rebuilt), chains `portfwd-forward`/`portfwd-input`
and their sets inside `qubes` (flushed and refilled), our jump rules in `custom-forward`/
`custom-input` (deleted by handle and added again). Nothing else is touched: Qubes' outbound
firewall (`ip|ip6 qubes-firewall`) belongs to Qubes' own qubes-firewall worker.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model.entries import Hop
from .forwards import (
    SkippedHop,
    delete_jumps,
    nat_table,
    qubes_accepts,
    select_hops,
)
from .lookups import MAX_MASKED_LENGTHS
from .owned import OwnedJumps
from .ssdp_reply import SsdpReply, ssdp_reply_rules
from .syntax import FAMILIES, IPAddress


@dataclass(frozen=True)
class QubeRules:
    """What one qube applies: its hops; `interface_addresses` are the qube's own addresses
    by interface (for hairpin, see `hairpin.py`)."""

    hops: tuple[Hop, ...] = ()
    interface_addresses: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    ssdp_replies: tuple[SsdpReply, ...] = ()  # the netvm's natd may answer M-SEARCH


@dataclass(frozen=True)
class CompiledRules:
    """The script for `nft -f -`, and what it had to leave out."""

    script: str
    skipped: tuple[SkippedHop, ...]


def compile_qube(
    rules: QubeRules, owned: OwnedJumps, *, max_masked: int = MAX_MASKED_LENGTHS
) -> CompiledRules:
    """Deterministic: the same rules and owned state give the same script.

    `max_masked`: how many source prefix lengths get hash lookups (`lookups.py`; 0 puts
    every source network in the interval sets, as before).
    """
    hops, skipped = select_hops(rules.hops, owned.base_families)
    lines = ["#!/usr/sbin/nft -f", "# qubes-portfwd: generated, replaced whole on each apply"]
    lines += delete_jumps(owned)
    for family in FAMILIES:
        lines += nat_table(family, hops, rules.interface_addresses, max_masked)
    for family in sorted(owned.base_families):
        lines += qubes_accepts(family, hops, max_masked)
    lines += ssdp_reply_rules(rules.ssdp_replies, owned.base_families)
    return CompiledRules("\n".join(lines) + "\n", tuple(skipped))
