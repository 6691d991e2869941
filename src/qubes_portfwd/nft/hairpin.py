"""Hairpin: a qube behind the edge reaches a forward through the edge's outside address.

For every DNAT hop entering by an interface (not `downstream`), packets arriving from
downstream (interface group 2) addressed to one of that interface's *outside* addresses are
DNATed like those arriving on the interface, and masqueraded on the way back in, so the
reply returns through this qube and is un-NATed (LAB-NOTES: without the masquerade the
target answers directly and the reply skips the un-NAT).

Outside addresses are those only the inbound interface has: a middle hop's `eth0` address
is also on its vifs (the downstream qubes' gateway), so a middle hop never hairpins and a
forward is reachable from inside only as a LAN client would reach it.

Source check: the hop's srchost must admit the address this qube sees, which is the
downstream neighbour's own address once that neighbour masqueraded the flow (e.g.
sys-firewall's 10.137.0.3 for `personal`), and the inner hops then see this qube's own
address. So a forward open to `0.0.0.0/0` (or to the qubes' 10.137.0.0/16) hairpins; a
forward limited to LAN addresses does not. The connecting qube's outbound firewall still
applies as usual (in its netvm, against the outside address).

Hairpinned flows carry conntrack label bit `HAIRPIN_LABEL` from the DNAT to the masquerade:
a conntrack label (not a mark) because marks are restored into routing decisions by VPN
tools such as wg-quick.
"""

from collections.abc import Mapping, Sequence

from ..model.entries import DOWNSTREAM, DnatHop
from .disjoint import collapsed
from .lookups import Keyed, KeyForm, source_expression
from .syntax import (
    IPAddress,
    addr_type,
    address_text,
    anonymous_set,
    dnat_address,
    table_family,
)

HAIRPIN_LABEL = 127
HAIRPIN_MAP = "dnat-hairpin"
HAIRPIN_PORTS = "ports-hairpin"
POSTROUTING_PRIORITY = "srcnat - 10"  # before Qubes' own postrouting: the first SNAT binding wins

InterfaceAddresses = Mapping[str, Sequence[IPAddress]]


def hairpin_chain(forward_id: str) -> str:
    return f"hairpin-{forward_id}"


def _usable(address: IPAddress) -> bool:
    """Addresses a downstream qube could send to: not link-local, loopback or multicast."""
    return not (address.is_link_local or address.is_loopback or address.is_multicast)


def hairpin_key_form(family: int) -> KeyForm:
    """`daddr . saddr . proto . dport`: the outside address first, then as the dispatch."""
    before = ((addr_type(family), f"{table_family(family)} daddr"),)
    after = (("inet_proto", "meta l4proto"),)
    return KeyForm(family, before, source_expression(family), after, "verdict")


def hairpin_pieces(
    family: int, dnats: Sequence[DnatHop], interfaces: InterfaceAddresses
) -> tuple[list[Keyed], list[str], list[DnatHop]]:
    """Dispatch elements, port-remap elements and the hops that hairpin, for one family."""
    outside = outside_addresses(interfaces, family)
    texts = {name: [(address_text(a),) for a in found] for name, found in outside.items()}
    dispatch: list[Keyed] = []
    remaps: list[str] = []
    hairpinned: list[DnatHop] = []
    for hop in dnats:
        addresses = outside.get(hop.inbound, []) if hop.inbound != DOWNSTREAM else []
        if not addresses:
            continue
        hairpinned.append(hop)
        shift = hop.ports.offset_to(hop.toports)
        goto = f"goto {hairpin_chain(hop.forward_id)}"
        for address, where in zip(addresses, texts[hop.inbound], strict=True):
            for proto in hop.protos:
                for source in collapsed(hop.sources):
                    dispatch.append(Keyed(where, source, (proto,), hop.ports, goto))
                if shift and len(hop.ports) > 1:
                    remaps += [
                        f"{address} . {proto} . {p} : {p + shift}"
                        for p in range(hop.ports.first, hop.ports.last + 1)
                    ]
    return dispatch, remaps, hairpinned


def outside_addresses(interfaces: InterfaceAddresses, family: int) -> dict[str, list[IPAddress]]:
    """Per interface, its usable addresses of `family` that no other interface has."""
    usable = {name: [a for a in found if _usable(a)] for name, found in interfaces.items()}
    owners: dict[IPAddress, set[str]] = {}
    for ifname, addresses in usable.items():
        for address in addresses:
            if address.version == family:
                owners.setdefault(address, set()).add(ifname)
    outside: dict[str, list[IPAddress]] = {}
    for address, names in sorted(owners.items(), key=lambda item: int(item[0])):
        if len(names) == 1:
            outside.setdefault(next(iter(names)), []).append(address)
    return outside


def hairpin_chain_lines(hop: DnatHop) -> list[str]:
    """The hop's hairpin chain: label the flow for the masquerade, then DNAT as usual."""
    ip = table_family(hop.family)
    match = f"meta l4proto {anonymous_set(hop.protos)} ct label set {HAIRPIN_LABEL}"
    target = dnat_address(hop.to)
    if hop.toports == hop.ports:
        rule = f"{match} dnat {ip} to {address_text(hop.to)}"
    elif len(hop.ports) == 1:
        rule = f"{match} dnat {ip} to {target}:{hop.toports.first}"
    else:
        remap = f"{ip} daddr . meta l4proto . th dport map @{HAIRPIN_PORTS}"
        rule = f"{match} dnat {ip} to {target} : {remap}"
    return [f"  chain {hairpin_chain(hop.forward_id)} {{", f"    {rule}", "  }"]


def masquerade_chain() -> list[str]:
    return [
        "  chain postrouting {",
        f"    type nat hook postrouting priority {POSTROUTING_PRIORITY}; policy accept;",
        f"    ct label {HAIRPIN_LABEL} masquerade",
        "  }",
    ]
