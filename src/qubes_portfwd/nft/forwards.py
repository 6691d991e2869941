"""Forward hops to nft: DNAT in our own table, accepts inside Qubes' `qubes` tables.

Per-packet cost is independent of the number of forwards: DNAT dispatches through one
verdict-map lookup to the forward's own chain; accepts are one lookup in a concatenated
interval set. Only a qube's `qubes` tables decide accept vs drop (DESIGN.md §1).
"""

import bisect
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..model.entries import DOWNSTREAM, AcceptHop, DnatHop, Hop
from .disjoint import Element, disjoint_elements
from .hairpin import (
    HAIRPIN_MAP,
    HAIRPIN_PORTS,
    InterfaceAddresses,
    hairpin_chain_lines,
    hairpin_pieces,
    hairpin_prerouting_rule,
    masquerade_chain,
)
from .owned import OwnedJumps
from .syntax import (
    BASE_TABLE,
    CUSTOM_CHAINS,
    FORWARD_CHAIN,
    INPUT_CHAIN,
    NAT_TABLE,
    OWNER_COMMENT,
    addr_type,
    anonymous_set,
    dnat_address,
    elements_line,
    forward_chain,
    network,
    ports,
    recreate_table,
    table_family,
)

FORWARD_SET = "portfwd-forward-allowed"
INPUT_SET = "portfwd-input-allowed"
NAT_PRIORITY = "dstnat - 10"  # before Qubes' dnat-dns (dstnat): the first DNAT binding wins


@dataclass(frozen=True)
class SkippedHop:
    """A hop left out of the script, and why (shown as that hop's state)."""

    forward_id: str
    family: int
    reason: str


Claims = dict[tuple[int, str, str], list[tuple[int, int, str]]]


def select_hops(
    hops: Iterable[Hop], base_families: frozenset[int]
) -> tuple[list[Hop], list[SkippedHop]]:
    """Hops in a stable order, minus those that cannot apply: no base table, or a DNAT clash.

    Two DNATs on the same interface, protocol and port cannot both win; the one with the
    lower forward id is kept, so the outcome never depends on the entries' order.
    """
    kept: list[Hop] = []
    skipped: list[SkippedHop] = []
    claimed: Claims = defaultdict(list)
    for hop in sorted(hops, key=lambda h: (h.forward_id, h.family)):
        if hop.family not in base_families:
            reason = f"Qubes' base table {table_family(hop.family)} qubes is missing"
            skipped.append(SkippedHop(hop.forward_id, hop.family, reason))
            continue
        if isinstance(hop, DnatHop):
            clash = _clash(claimed, hop)
            if clash is not None:
                skipped.append(SkippedHop(hop.forward_id, hop.family, clash))
                continue
            for proto in hop.protos:
                bisect.insort(
                    claimed[(hop.family, hop.inbound, proto)],
                    (hop.ports.first, hop.ports.last, hop.forward_id),
                )
        kept.append(hop)
    return kept, skipped


def _clash(claimed: Claims, hop: DnatHop) -> str | None:
    for proto in hop.protos:
        taken = claimed[(hop.family, hop.inbound, proto)]
        index = bisect.bisect_left(taken, (hop.ports.first, -1, ""))
        for first, last, owner in taken[max(index - 1, 0) : index + 1]:
            if first <= hop.ports.last and hop.ports.first <= last:
                return f"{proto}/{hop.ports.short} on {hop.inbound} is already forwarded by {owner}"
    return None


def nat_table(
    family: int, hops: Sequence[Hop], interfaces: InterfaceAddresses | None = None
) -> list[str]:
    """Our NAT table for one family, deleted and rebuilt whole (hairpin: see `hairpin.py`).

    The dispatch key holds the source, so a forward's chain has no set of its own: nft
    loads thousands of per-rule anonymous sets in quadratic time. Port remaps live in one
    shared map for the same reason; keys are unique because clashing hops were left out.
    """
    ip = table_family(family)
    addr = addr_type(family)
    dnats = [h for h in hops if isinstance(h, DnatHop) and h.family == family]
    dispatch: dict[bool, list[str]] = {True: [], False: []}
    remaps: dict[bool, list[str]] = {True: [], False: []}
    for hop in dnats:
        internal = hop.inbound == DOWNSTREAM
        where = "" if internal else f'"{hop.inbound}" . '
        shift = hop.ports.offset_to(hop.toports)
        for proto in hop.protos:
            for source in ipaddress.collapse_addresses(hop.sources):  # type: ignore[type-var]
                dispatch[internal].append(
                    f"{where}{network(source)} . {proto} . {ports(hop.ports)} "
                    f": goto {forward_chain(hop.forward_id)}"
                )
            if shift:
                remaps[internal] += [
                    f"{where}{proto} . {p} : {p + shift}"
                    for p in range(hop.ports.first, hop.ports.last + 1)
                ]
    hairpin, hairpin_remaps, hairpinned = hairpin_pieces(family, dnats, interfaces or {})
    lines = [*recreate_table(family, NAT_TABLE), f"table {ip} {NAT_TABLE} {{"]
    for internal, name, key in ((True, "downstream", ""), (False, "inbound", "ifname . ")):
        lines += [
            f"  map dnat-{name} {{",
            f"    type {key}{addr} . inet_proto . inet_service : verdict",
            "    flags interval",
            *elements_line(dispatch[internal], "    "),
            "  }",
            f"  map ports-{name} {{",
            f"    type {key}inet_proto . inet_service : inet_service",
            *elements_line(remaps[internal], "    "),
            "  }",
        ]
    lines += [
        f"  map {HAIRPIN_MAP} {{",
        f"    type {addr} . {addr} . inet_proto . inet_service : verdict",
        "    flags interval",
        *elements_line(hairpin, "    "),
        "  }",
        f"  map {HAIRPIN_PORTS} {{",
        f"    type {addr} . inet_proto . inet_service : inet_service",
        *elements_line(hairpin_remaps, "    "),
        "  }",
        "  chain prerouting {",
        f"    type nat hook prerouting priority {NAT_PRIORITY}; policy accept;",
        f"    {hairpin_prerouting_rule(family)}",
        f"    fib daddr type local iifgroup 2 {ip} saddr . meta l4proto . th dport "
        "vmap @dnat-downstream",
        f"    fib daddr type local iifname . {ip} saddr . meta l4proto . th dport "
        "vmap @dnat-inbound",
        "  }",
    ]
    for hop in dnats:
        lines += [f"  chain {forward_chain(hop.forward_id)} {{", f"    {_dnat_rule(hop)}", "  }"]
    for hop in hairpinned:
        lines += hairpin_chain_lines(hop)
    if hairpinned:
        lines += masquerade_chain()
    return [*lines, "}"]


def _dnat_rule(hop: DnatHop) -> str:
    ip = table_family(hop.family)
    match = f"meta l4proto {anonymous_set(hop.protos)}"
    if hop.toports == hop.ports:
        return f"{match} dnat {ip} to {hop.to}"
    if len(hop.ports) == 1:
        return f"{match} dnat {ip} to {dnat_address(hop.to)}:{hop.toports.first}"
    # nft has no port-offset NAT: each port is looked up in the shared remap map.
    key, remap = (
        ("", "ports-downstream") if hop.inbound == DOWNSTREAM else ("iifname . ", "ports-inbound")
    )
    target = dnat_address(hop.to)
    return f"{match} dnat {ip} to {target} : {key}meta l4proto . th dport map @{remap}"


def forward_elements(family: int, hops: Iterable[Hop], internal_only: bool = False) -> list[str]:
    """`saddr . daddr . proto . dport` of DNATed flows to let through, disjoint."""
    items = [
        Element((str(hop.to), proto), source, hop.toports)
        for hop in hops
        if isinstance(hop, DnatHop) and hop.family == family
        if not internal_only or hop.inbound == DOWNSTREAM
        for proto in hop.protos
        for source in hop.sources
    ]
    return [
        f"{network(e.source)} . {e.key[0]} . {e.key[1]} . {ports(e.ports)}"
        for e in disjoint_elements(items)
    ]


def input_elements(family: int, hops: Iterable[Hop]) -> list[str]:
    """`saddr . proto . dport` of the target's input to let through, disjoint."""
    items = [
        Element(proto, source, hop.ports)
        for hop in hops
        if isinstance(hop, AcceptHop) and hop.family == family
        for proto in hop.protos
        for source in hop.sources
    ]
    return [f"{network(e.source)} . {e.key} . {ports(e.ports)}" for e in disjoint_elements(items)]


def delete_jumps(owned: OwnedJumps) -> list[str]:
    return [
        f"delete rule {table_family(j.family)} {BASE_TABLE} {j.chain} handle {j.handle}"
        for j in owned.jumps
    ]


def qubes_accepts(family: int, hops: Sequence[Hop]) -> list[str]:
    """Our chains and sets inside `qubes` for one family: declared, emptied, refilled, jumped to."""
    ip = table_family(family)
    addr = addr_type(family)
    where = f"{ip} {BASE_TABLE}"
    lines = [
        f"table {where} {{",
        f"  set {FORWARD_SET} {{",
        f"    type {addr} . {addr} . inet_proto . inet_service",
        "    flags interval",
        "  }",
        f"  set {INPUT_SET} {{",
        f"    type {addr} . inet_proto . inet_service",
        "    flags interval",
        "  }",
        f"  chain {FORWARD_CHAIN} {{",
        "  }",
        f"  chain {INPUT_CHAIN} {{",
        "  }",
        "}",
        f"flush chain {where} {FORWARD_CHAIN}",
        f"flush chain {where} {INPUT_CHAIN}",
        f"flush set {where} {FORWARD_SET}",
        f"flush set {where} {INPUT_SET}",
    ]
    for name, elements in (
        (FORWARD_SET, forward_elements(family, hops)),
        (INPUT_SET, input_elements(family, hops)),
    ):
        if elements:
            lines.append(f"add element {where} {name} {{ {', '.join(elements)} }}")
    # Only new flows: invalid ones must still meet Qubes' `ct state invalid drop`.
    lines += [
        f"add rule {where} {FORWARD_CHAIN} ct state new ct status dnat "
        f"{ip} saddr . {ip} daddr . meta l4proto . th dport @{FORWARD_SET} accept",
        f"add rule {where} {INPUT_CHAIN} ct state new "
        f"{ip} saddr . meta l4proto . th dport @{INPUT_SET} accept",
    ]
    for ours, custom in CUSTOM_CHAINS.items():
        lines.append(f'add rule {where} {custom} jump {ours} comment "{OWNER_COMMENT}"')
    return lines
