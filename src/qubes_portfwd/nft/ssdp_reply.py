"""Let the gateway's SSDP answer in: the unicast reply to a multicast M-SEARCH.

An application's M-SEARCH goes to 239.255.255.250:1900; the gateway's natd answers from its
own address, port 1900. Conntrack cannot pair the two, so the answer arrives as a new flow
and Qubes' input policy drops it. This opens exactly that flow: from the gateway's address
and port 1900 to the qube's own address, UDP only, and only where the netvm runs natd.
"""

from dataclasses import dataclass

from .syntax import BASE_TABLE, INPUT_CHAIN, IPAddress, table_family

SSDP_PORT = 1900


@dataclass(frozen=True)
class SsdpReply:
    """The gateway whose SSDP replies may reach this qube, and the qube's own address."""

    gateway: IPAddress
    address: IPAddress

    def __post_init__(self) -> None:
        if self.gateway.version != self.address.version:
            raise ValueError("gateway and address must be of one family")


def ssdp_reply_rules(replies: tuple[SsdpReply, ...], base_families: frozenset[int]) -> list[str]:
    """Rules added to our input chain (flushed by the same script), for families with a base."""
    lines = []
    for reply in replies:
        family = reply.address.version
        if family not in base_families:
            continue
        ip = table_family(family)
        lines.append(
            f"add rule {ip} {BASE_TABLE} {INPUT_CHAIN} ct state new "
            f"{ip} saddr {reply.gateway} {ip} daddr {reply.address} "
            f"udp sport {SSDP_PORT} accept"
        )
    return lines
