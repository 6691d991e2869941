"""Forward hops to nft: DNAT in our own table, accepts inside Qubes' `qubes` tables.

Per-packet cost is independent of the number of forwards: DNAT dispatches through verdict-map
lookups to the forward's own chain; accepts are set lookups. Each set and map is split by
element shape (`lookups.py`): hash lookups for single ports from everywhere, from one
address or from a network (keyed on the source masked to its length), an interval lookup
only for port ranges and rare prefix lengths. Only a qube's `qubes` tables decide accept vs
drop (DESIGN.md §1).
"""

import bisect
import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..model.entries import DOWNSTREAM, AcceptHop, DnatHop, Hop
from .disjoint import Element, collapsed, disjoint_elements
from .hairpin import (
    HAIRPIN_MAP,
    HAIRPIN_PORTS,
    InterfaceAddresses,
    hairpin_chain_lines,
    hairpin_key_form,
    hairpin_pieces,
    masquerade_chain,
)
from .lookups import (
    FIXED_SHAPES,
    MASK_SLOTS,
    MAX_MASKED_LENGTHS,
    Keyed,
    KeyForm,
    Shape,
    by_shape,
    masked,
    source_expression,
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
    address_text,
    anonymous_set,
    dnat_address,
    elements_line,
    forward_chain,
    network,
    ports,
    recreate_table,
    table_family,
)

DISPATCH_CHAIN = "dispatch"  # entered for packets to this qube's own addresses only
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


def _dispatch_form(family: int, internal: bool) -> KeyForm:
    before = () if internal else (("ifname", "iifname"),)
    after = (("inet_proto", "meta l4proto"),)
    return KeyForm(family, before, source_expression(family), after, "verdict")


def _dispatch_items(hops: Sequence[DnatHop], internal: bool) -> list[Keyed]:
    items = []
    for hop in hops:
        if (hop.inbound == DOWNSTREAM) != internal:
            continue
        where = () if internal else (f'"{hop.inbound}"',)
        for proto in hop.protos:
            for source in collapsed(hop.sources):
                items.append(
                    Keyed(
                        where, source, (proto,), hop.ports, f"goto {forward_chain(hop.forward_id)}"
                    )
                )
    return items


def nat_table(
    family: int,
    hops: Sequence[Hop],
    interfaces: InterfaceAddresses | None = None,
    max_masked: int = MAX_MASKED_LENGTHS,
) -> list[str]:
    """Our NAT table for one family, deleted and rebuilt whole (hairpin: see `hairpin.py`).

    The dispatch key holds the source, so a forward's chain has no set of its own: nft
    loads thousands of per-rule anonymous sets in quadratic time. Port remaps live in one
    shared map for the same reason; keys are unique because clashing hops were left out.
    Each dispatch map comes in the shapes of `lookups.py`, so a new connection costs hash
    lookups, plus an interval lookup over only the forwards with port ranges (or rare
    prefix lengths).
    """
    ip = table_family(family)
    dnats = [h for h in hops if isinstance(h, DnatHop) and h.family == family]
    remaps: dict[bool, list[str]] = {True: [], False: []}
    for hop in dnats:
        internal = hop.inbound == DOWNSTREAM
        where = "" if internal else f'"{hop.inbound}" . '
        shift = hop.ports.offset_to(hop.toports)
        if shift:
            for proto in hop.protos:
                remaps[internal] += [
                    f"{where}{proto} . {p} : {p + shift}"
                    for p in range(hop.ports.first, hop.ports.last + 1)
                ]
    hairpin, hairpin_remaps, hairpinned = hairpin_pieces(family, dnats, interfaces or {})
    hairpin_form = hairpin_key_form(family)
    lines = [*recreate_table(family, NAT_TABLE), f"table {ip} {NAT_TABLE} {{"]
    rules: list[str] = []
    for shape, elements in by_shape(hairpin, family, max_masked).items():
        lines += hairpin_form.declaration("map", HAIRPIN_MAP, shape, elements)
        rules.append(f"iifgroup 2 {hairpin_form.selector(shape)} vmap @{shape.name(HAIRPIN_MAP)}")
    for internal, name, key in ((True, "downstream", ""), (False, "inbound", "ifname . ")):
        form = _dispatch_form(family, internal)
        dispatch = by_shape(_dispatch_items(dnats, internal), family, max_masked)
        for shape, elements in dispatch.items():
            lines += form.declaration("map", f"dnat-{name}", shape, elements)
            match = "iifgroup 2 " if internal else ""
            rules.append(f"{match}{form.selector(shape)} vmap @{shape.name(f'dnat-{name}')}")
        lines += [
            f"  map ports-{name} {{",
            f"    type {key}inet_proto . inet_service : inet_service",
            *elements_line(remaps[internal], "    "),
            "  }",
        ]
    lines += [
        f"  map {HAIRPIN_PORTS} {{",
        f"    type {addr_type(family)} . inet_proto . inet_service : inet_service",
        *elements_line(hairpin_remaps, "    "),
        "  }",
        "  chain prerouting {",
        f"    type nat hook prerouting priority {NAT_PRIORITY}; policy accept;",
        f"    fib daddr type local jump {DISPATCH_CHAIN}",
        "  }",
        # Hairpin first: a downstream packet to the outside address is the more specific.
        f"  chain {DISPATCH_CHAIN} {{",
        *(f"    {rule}" for rule in rules),
        "  }",
    ]
    for hop in dnats:
        lines += [f"  chain {forward_chain(hop.forward_id)} {{", f"    {_dnat_rule(hop)}", "  }"]
    for hop in hairpinned:
        lines += hairpin_chain_lines(hop)
    # Always there, even with nothing to hairpin: a structure that does not depend on the
    # forwards lets the agent load changes in place (`delta.py`); it touches labelled flows only.
    lines += masquerade_chain()
    return [*lines, "}"]


def _dnat_rule(hop: DnatHop) -> str:
    ip = table_family(hop.family)
    match = f"meta l4proto {anonymous_set(hop.protos)}"
    if hop.toports == hop.ports:
        return f"{match} dnat {ip} to {address_text(hop.to)}"
    if len(hop.ports) == 1:
        return f"{match} dnat {ip} to {dnat_address(hop.to)}:{hop.toports.first}"
    # nft has no port-offset NAT: each port is looked up in the shared remap map.
    key, remap = (
        ("", "ports-downstream") if hop.inbound == DOWNSTREAM else ("iifname . ", "ports-inbound")
    )
    target = dnat_address(hop.to)
    return f"{match} dnat {ip} to {target} : {key}meta l4proto . th dport map @{remap}"


def _forward_items(family: int, hops: Iterable[Hop]) -> list[Keyed]:
    items = []
    for hop in hops:
        if isinstance(hop, DnatHop) and hop.family == family:
            to = address_text(hop.to)
            items += [
                Element((to, proto), source, hop.toports)
                for proto in hop.protos
                for source in hop.sources
            ]
    return [Keyed((), e.source, e.key, e.ports) for e in disjoint_elements(items)]


def _input_items(family: int, hops: Iterable[Hop]) -> list[Keyed]:
    items = [
        Element(proto, source, hop.ports)
        for hop in hops
        if isinstance(hop, AcceptHop) and hop.family == family
        for proto in hop.protos
        for source in hop.sources
    ]
    return [Keyed((), e.source, (e.key,), e.ports) for e in disjoint_elements(items)]


def _full_text(item: Keyed) -> str:
    return " . ".join([network(item.source), *item.after, ports(item.ports)])


def forward_elements(family: int, hops: Iterable[Hop]) -> list[str]:
    """`saddr . daddr . proto . dport` of DNATed flows to let through, disjoint."""
    return [_full_text(item) for item in _forward_items(family, hops)]


def input_elements(family: int, hops: Iterable[Hop]) -> list[str]:
    """`saddr . proto . dport` of the target's input to let through, disjoint."""
    return [_full_text(item) for item in _input_items(family, hops)]


def forward_key_form(family: int) -> KeyForm:
    after = ((addr_type(family), f"{table_family(family)} daddr"), ("inet_proto", "meta l4proto"))
    return KeyForm(family, (), source_expression(family), after)


def input_key_form(family: int) -> KeyForm:
    return KeyForm(family, (), source_expression(family), (("inet_proto", "meta l4proto"),))


def delete_jumps(owned: OwnedJumps) -> list[str]:
    return [
        f"delete rule {table_family(j.family)} {BASE_TABLE} {j.chain} handle {j.handle}"
        for j in owned.jumps
    ]


def qubes_accepts(
    family: int, hops: Sequence[Hop], max_masked: int = MAX_MASKED_LENGTHS
) -> list[str]:
    """Our chains and sets inside `qubes` for one family: declared, emptied, refilled, jumped to.

    Every masked slot is declared and flushed whether used or not, so a slot an earlier
    apply filled never keeps its elements; only the used ones get a rule.
    """
    where = f"{table_family(family)} {BASE_TABLE}"
    kinds = (
        (FORWARD_SET, FORWARD_CHAIN, forward_key_form(family), _forward_items(family, hops)),
        (INPUT_SET, INPUT_CHAIN, input_key_form(family), _input_items(family, hops)),
    )
    shaped = [
        (base, chain, form, by_shape(items, family, max_masked))
        for base, chain, form, items in kinds
    ]
    declared = [(base, form, shape) for base, _, form, _ in shaped for shape in _declared_shapes()]
    lines = [f"table {where} {{"]
    lines += [
        line for base, form, shape in declared for line in form.declaration("set", base, shape, ())
    ]
    lines += [f"  chain {FORWARD_CHAIN} {{", "  }", f"  chain {INPUT_CHAIN} {{", "  }", "}"]
    lines += [f"flush chain {where} {FORWARD_CHAIN}", f"flush chain {where} {INPUT_CHAIN}"]
    lines += [f"flush set {where} {shape.name(base)}" for base, _, shape in declared]
    # Only new flows: invalid ones must still meet Qubes' `ct state invalid drop`.
    conditions = {FORWARD_CHAIN: "ct state new ct status dnat", INPUT_CHAIN: "ct state new"}
    for base, chain, form, elements_by_shape in shaped:
        for shape, elements in elements_by_shape.items():
            if elements:
                name = shape.name(base)
                lines.append(f"add element {where} {name} {{ {', '.join(elements)} }}")
        for shape in elements_by_shape:
            lines.append(
                f"add rule {where} {chain} {conditions[chain]} "
                f"{form.selector(shape)} @{shape.name(base)} accept"
            )
    for ours, custom in CUSTOM_CHAINS.items():
        lines.append(f'add rule {where} {custom} jump {ours} comment "{OWNER_COMMENT}"')
    return lines


@functools.cache
def _declared_shapes() -> tuple[Shape, ...]:
    """The fixed shapes and every masked slot (its length only shows in the rule)."""
    return (*FIXED_SHAPES, *(masked(0, slot) for slot in range(MASK_SLOTS)))
