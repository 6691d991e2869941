"""Small pieces of nft text shared by the base ruleset and the compiler."""

import ipaddress
from collections.abc import Iterable

from ..model.hosts import Network, address_text
from ..model.ports import PortRange

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

OWNER_COMMENT = "qubes-portfwd"  # marks the jump rules this project adds in Qubes' custom chains
NAT_TABLE = "qubes-portfwd"
BASE_TABLE = "qubes"
FORWARD_CHAIN = "portfwd-forward"  # in `qubes`, jumped to from custom-forward
INPUT_CHAIN = "portfwd-input"  # in `qubes`, jumped to from custom-input
CUSTOM_CHAINS = {FORWARD_CHAIN: "custom-forward", INPUT_CHAIN: "custom-input"}
FAMILIES = (4, 6)


def table_family(family: int) -> str:
    """nft's name for an address family: `ip` or `ip6` (also the payload keyword)."""
    return "ip" if family == 4 else "ip6"


def addr_type(family: int) -> str:
    return "ipv4_addr" if family == 4 else "ipv6_addr"


def icmp_proto(family: int) -> str:
    return "icmp" if family == 4 else "ipv6-icmp"


def icmp_keyword(family: int) -> str:
    return "icmp" if family == 4 else "icmpv6"


def reject_prohibited(family: int) -> str:
    """What Qubes puts where a firewall rule says drop."""
    return f"reject with {icmp_keyword(family)} type admin-prohibited"


def ports(port_range: PortRange) -> str:
    return port_range.short


def network(net: Network) -> str:
    return address_text(net)


def dnat_address(address: IPAddress) -> str:
    """An address before `:port` in `dnat to` (IPv6 needs brackets there)."""
    text = address_text(address)
    return f"[{text}]" if address.version == 6 else text


def anonymous_set(items: Iterable[str]) -> str:
    listed = list(items)
    return listed[0] if len(listed) == 1 else "{ " + ", ".join(listed) + " }"


def elements_line(elements: Iterable[str], indent: str) -> list[str]:
    """`elements = { … }` for a set or map declaration; nothing when empty (nft refuses `{ }`)."""
    listed = list(elements)
    if not listed:
        return []
    body = f",\n{indent}             ".join(listed)
    return [f"{indent}elements = {{ {body} }}"]


def recreate_table(family: int, name: str) -> list[str]:
    """Delete a table whether or not it exists, inside the same transaction."""
    where = f"{table_family(family)} {name}"
    return [f"table {where} {{}}", f"delete table {where}"]


def qbs_chain(address: IPAddress) -> str:
    """Qubes' per-source chain name: `qbs-10-137-0-5`, `qbs-fd09-24ef-4179--a89-5`."""
    return "qbs-" + str(address).replace(".", "-").replace(":", "-")


def forward_chain(forward_id: str) -> str:
    return f"fwd-{forward_id}"
